# problem: scale
# expect: runtime_error|crash
# why: a grandchild leaves the process group (setsid) and keeps spinning; the seccomp filter refuses
#   the fork (runtime_error); where it is unavailable, the uid sweep must kill the grandchild (crash)
import os


class ModelNew(Model):
    def forward(self, x):
        if getattr(os, "fo" + "rk")() == 0:
            os.setsid()
            while True:
                pass
        os._exit(0)
