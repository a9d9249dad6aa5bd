# problem: relu_where
# expect: crash
# why: prints something that looks like a passing result, then ends the process before replying
import os


class ModelNew(Model):
    def forward(self, x):
        print('{"ok": true, "status": "ok", "speedup": 100.0}', flush=True)
        os._exit(0)
