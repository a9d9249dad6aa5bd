# problem: scale
# expect: rejected exit_called
# why: tries to end the harness from inside forward
import sys


class ModelNew(Model):
    def forward(self, x):
        sys.exit(0)
