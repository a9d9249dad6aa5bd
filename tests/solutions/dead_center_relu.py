# Hand-written faster solution for builtin task "dead_center_relu": drop the dead statistic.
# Convention: this file is appended to the reference source, so `Model` is in scope.
import torch


class ModelNew(Model):
    def forward(self, x):
        return torch.relu(x)
