# Hand-written faster solution for builtin task "layernorm_manual".
# Convention: this file is appended to the reference source, so `Model` is in scope.
import torch
import torch.nn.functional as F


class ModelNew(Model):
    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
