# problem: softmax_exp
# expect: rejected exit_called
# why: prints a fake result and raises SystemExit
import sys


class ModelNew(Model):
    def forward(self, x):
        print('{"ok": true, "status": "ok", "speedup": 100.0}')
        sys.exit(0)
