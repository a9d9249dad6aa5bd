# problem: scale
# expect: rejected timed_output_mismatch
# why: computes honestly during the correctness trials, then replays a cached output


class ModelNew(Model):
    calls = 0
    cached = None

    def forward(self, x):
        ModelNew.calls += 1
        if ModelNew.cached is None or ModelNew.calls <= 3:  # the test's 2 trials and the varied trial
            ModelNew.cached = super().forward(x)
        return ModelNew.cached.clone()
