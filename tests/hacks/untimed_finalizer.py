# problem: relu_where
# expect: rejected untimed_work
# why: hooks work onto the release of its inputs, which the harness does off the clock (between batches)
import time
import weakref


def _busy():
    end = time.perf_counter() + 0.06
    while time.perf_counter() < end:
        pass


class ModelNew(Model):
    def forward(self, x):
        weakref.finalize(x, _busy)
        return super().forward(x)
