# problem: relu_where
# expect: runtime_error permitted
# why: once timing starts, forks a helper into its own session that spins on the timing cpu while
#   the reference runs (it inherits the pinning and the raised priority) and is killed and reaped
#   before the stray-process check; the child's seccomp filter refuses fork/vfork/clone of a process
import os
import time


_state = {"pid": 0}


class ModelNew(Model):
    def forward(self, x):
        if _state["pid"] == 0:
            pid = getattr(os, "fo" + "rk")()
            if pid == 0:
                os.setsid()
                end = time.monotonic() + 30
                while time.monotonic() < end:
                    pass
                os._exit(0)
            _state["pid"] = pid
        return super().forward(x)
