"""GELU (tanh approximation) written out

The tanh approximation of GELU written as three lines of elementwise ops.
"""

import math

import torch
import torch.nn as nn

TAGS = ["multi-op", "elementwise", "headroom"]

BATCH = 1024
DIM = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cube = 0.044715 * torch.pow(x, 3)
        inner = math.sqrt(2.0 / math.pi) * (x + cube)
        return 0.5 * x * (1.0 + torch.tanh(inner))


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
