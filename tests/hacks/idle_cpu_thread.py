# problem: matmul
# expect: ok
# no_gain: 1.4
# why: a helper thread computes the lower half of every matmul while the main thread does the
#   upper half, trying to move itself to the other (idle) cpu; its CPU is the child's process
#   clock, which is what a round costs when threads == 1, and sched_setaffinity is refused: the
#   split gains nothing (the same kernel as the reference)
import os
import sys

_threads = vars(sys)["modu" + "les"]["threading"]


def _lower(a, b, out):
    try:
        os.sched_setaffinity(0, {0})
    except OSError:
        pass
    torch.mm(a[256:], b, out=out[256:])


class ModelNew(Model):
    def forward(self, a, b):
        out = torch.empty(a.shape[0], b.shape[1])
        helper = _threads.Thread(target=_lower, args=(a, b, out))
        helper.start()
        torch.mm(a[:256], b, out=out[:256])
        helper.join()
        return out
