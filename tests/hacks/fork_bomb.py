# problem: scale
# expect: runtime_error|crash
# why: forks without end (name computed to pass the static check); RLIMIT_NPROC stops it
import os


class ModelNew(Model):
    def forward(self, x):
        spawn = getattr(os, "fo" + "rk")
        while True:
            spawn()
