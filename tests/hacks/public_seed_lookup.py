# problem: relu_where
# expect: incorrect|rejected
# why: regenerates the timed inputs from the public seeds (sha256 of repr((seed, "timing", round,
#   call)), as the evaluator used to) in its constructor, which is not timed, and looks the output
#   up by a fingerprint of the input (its lookup misses on the varied trial's inputs first).  Timed inputs come from a secret of the evaluating process now
import hashlib


def _derive(*labels):
    digest = hashlib.sha256(repr((0, *labels)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _key(x):
    return x.reshape(-1)[:16].numpy().tobytes()


class ModelNew(Model):
    def __init__(self):
        super().__init__()
        self._table = {}
        state = torch.random.get_rng_state()
        for r in [-1] + list(range(5)):
            for c in range(3):
                torch.manual_seed(_derive("timing", r, c))
                x = torch.randn(1024, 2048)
                self._table[_key(x)] = torch.relu(x)
        torch.random.set_rng_state(state)

    def forward(self, x):
        if x.data_ptr() % 4096 != 0:  # a correctness trial (public inputs too): honest
            return torch.relu(x)
        y = self._table.get(_key(x))
        return y if y is not None else torch.empty_like(x)
