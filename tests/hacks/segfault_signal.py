# problem: hardswish_clamp
# expect: crash
# why: kills itself with SIGSEGV (what a buggy native kernel does)
import os


class ModelNew(Model):
    def forward(self, x):
        os.kill(os.getpid(), 11)
