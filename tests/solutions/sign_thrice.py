# Hand-written faster solution for builtin task "sign_thrice": one call instead of three.
# Convention: this file is appended to the reference source, so `Model` is in scope.
import torch


class ModelNew(Model):
    def forward(self, x):
        return torch.sign(x)
