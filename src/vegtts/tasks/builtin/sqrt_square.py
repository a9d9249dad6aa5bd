"""Square root of the square

sqrt(x * x) is |x| (exactly, for inputs far from overflow and underflow), computed in two passes.
"""

import torch
import torch.nn as nn

TAGS = ["naive-short", "redundant", "headroom"]

BATCH = 2048
DIM = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x * x)


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
