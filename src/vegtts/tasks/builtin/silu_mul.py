"""SiLU written as x * sigmoid(x)

The SiLU (swish) activation as a sigmoid followed by a multiply: two passes and one temporary.
"""

import torch
import torch.nn as nn

TAGS = ["naive-short", "elementwise", "headroom"]

BATCH = 3072
DIM = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
