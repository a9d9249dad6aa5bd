"""Inclusive prefix sum

torch.cumsum along dimension 1 (KernelBench level 1 problem 89, small). Rows and columns have
the same count, so a scan along the wrong dimension keeps the shape.
"""

import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return torch.cumsum(x, dim=self.dim)


batch_size = 512
input_shape = (512,)
dim = 1


def get_inputs():
    return [torch.rand(batch_size, *input_shape)]


def get_init_inputs():
    return [dim]
