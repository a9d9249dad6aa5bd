# Hand-written faster solution for builtin task "pairwise_dist".
# Convention: this file is appended to the reference source, so `Model` is in scope.
import torch
import torch.nn.functional as F


class ModelNew(Model):
    def forward(self, x, y):
        return torch.cdist(x, y)
