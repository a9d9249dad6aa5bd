# problem: matmul
# expect: runtime_error|rejected
# why: leaves a helper process spinning (it would steal the cpu from the reference while the candidate waits);
#   the seccomp filter refuses the fork (runtime_error); where it is unavailable, the stray-process check
#   rejects it (background_process)
import os

_started = []


class ModelNew(Model):
    def forward(self, a, b):
        if not _started:
            pid = getattr(os, "fo" + "rk")()
            if pid == 0:
                while True:
                    pass
            _started.append(pid)
        return super().forward(a, b)
