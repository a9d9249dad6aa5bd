# Hand-written faster solution for builtin task "gelu_tanh_manual".
# Convention: this file is appended to the reference source, so `Model` is in scope.
import torch
import torch.nn.functional as F


class ModelNew(Model):
    def forward(self, x):
        return F.gelu(x, approximate="tanh")
