# problem: matmul
# expect: runtime_error|crash
# why: forks without end; RLIMIT_NPROC on the child's own uid stops it, the uid sweep cleans up
import os


class ModelNew(Model):
    def forward(self, a, b):
        while True:
            getattr(os, "fo" + "rk")()
