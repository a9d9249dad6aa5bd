# Hand-written faster solution for builtin task "log_softmax_log".
# Convention: this file is appended to the reference source, so `Model` is in scope.
import torch
import torch.nn.functional as F


class ModelNew(Model):
    def forward(self, x):
        return torch.log_softmax(x, dim=-1)
