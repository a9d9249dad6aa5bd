# Hand-written faster solution for builtin task "relu_twice".
# Convention: this file is appended to the reference source, so `Model` is in scope.
import torch
import torch.nn.functional as F


class ModelNew(Model):
    def forward(self, x):
        return torch.relu(x)
