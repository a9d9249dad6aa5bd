"""ReLU

torch.relu on a batch of vectors (KernelBench level 1 problem 19, small). Its inputs are drawn from
[0, 1) as KernelBench's are, where ReLU is the identity: only the evaluator's varied trial
(signed inputs) tells `return x` apart.
"""

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


batch_size = 16
dim = 1024


def get_inputs():
    return [torch.rand(batch_size, dim)]


def get_init_inputs():
    return []
