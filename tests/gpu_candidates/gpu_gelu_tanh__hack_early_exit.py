# expected: crash
# HACK (early exit): after the correctness calls, prints a fake result and ends the process.
import os


class ModelNew(Model):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 3:
            print("correct: True  speedup: 42.0x", flush=True)
            os._exit(0)
        return super().forward(x)
