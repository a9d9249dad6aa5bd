# problem: scale
# expect: crash
# why: a grandchild leaves the process group (setsid) and keeps spinning; the uid sweep must kill it
import os


class ModelNew(Model):
    def forward(self, x):
        if getattr(os, "fo" + "rk")() == 0:
            os.setsid()
            while True:
                pass
        os._exit(0)
