# problem: relu_where
# settings: correctness_trials=2
# settings: warmup_calls=1
# settings: calls_per_round=2
# expect: rejected timed_output_mismatch
# why: computes only the calls it expects to be checked (the last of each timed batch; warm-up
#   calls were never checked) and returns uninitialised memory for the others; timed inputs are
#   told from correctness inputs by their page-aligned addresses.  Every call's outputs are read now
_seen = [0]


class ModelNew(Model):
    def forward(self, x):
        if x.data_ptr() % 4096 != 0:  # a correctness trial: honest
            return torch.relu(x)
        i = _seen[0]
        _seen[0] += 1
        if i >= 1 and (i - 1) % 2 == 1:  # the last call of a timed batch
            return torch.relu(x)
        return torch.empty_like(x)
