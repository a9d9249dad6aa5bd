# problem: scale
# expect: crash
# why: kills itself with SIGSEGV (signal number, so no banned module is imported)
import os


class ModelNew(Model):
    def forward(self, x):
        os.kill(os.getpid(), 11)
        return super().forward(x)
