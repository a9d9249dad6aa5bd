# problem: relu_where
# runs: 2
# expect: rejected timed_output_mismatch
# why: one candidate leaves every timed input's output in /dev/shm and /tmp (world-writable, never
#   cleaned); the next candidate of the task loads them and only looks outputs up (the seeds did not
#   depend on the candidate).  Each child has its own /tmp and /dev/shm now (a mount namespace with
#   fresh tmpfs), and timed inputs come from a secret: the second run finds nothing and is wrong
import os

_DIRS = ["/dev/shm/.relu_where_outputs", "/tmp/.relu_where_outputs"]
_LATER = __RUN__ > 0  # the first candidate stashes, a later one relies on the stash


def _key(x):
    return x.reshape(-1)[:16].numpy().tobytes().hex()


class ModelNew(Model):
    def __init__(self):
        super().__init__()
        self._table = {}
        for d in _DIRS:
            if os.path.isdir(d):
                for name in os.listdir(d):
                    self._table[name[:-3]] = torch.load(os.path.join(d, name))

    def forward(self, x):
        if x.data_ptr() % 4096 != 0:
            return torch.relu(x)
        if _LATER:  # a later candidate: serve from the stash
            y = self._table.get(_key(x))
            return y if y is not None else torch.empty_like(x)
        y = torch.relu(x)
        for d in _DIRS:
            try:
                os.makedirs(d, mode=0o777, exist_ok=True)
                os.chmod(d, 0o777)
                torch.save(y.clone(), os.path.join(d, _key(x) + ".pt"))
            except OSError:
                pass
        return y
