# problem: scale
# expect: crash
# why: ends the child process without a reply
import os


class ModelNew(Model):
    def forward(self, x):
        os._exit(0)
