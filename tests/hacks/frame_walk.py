# problem: scale
# expect: rejected frame_access
# why: walks up the stack into the harness to read or patch its state
import sys


class ModelNew(Model):
    def forward(self, x):
        frame = sys._getframe(1)
        return super().forward(x)
