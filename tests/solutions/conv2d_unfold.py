# Hand-written faster solution for builtin task "conv2d_unfold".
# Convention: this file is appended to the reference source, so `Model` is in scope.
import torch
import torch.nn.functional as F


class ModelNew(Model):
    def forward(self, x):
        return F.conv2d(x, self.weight, padding=self.padding)
