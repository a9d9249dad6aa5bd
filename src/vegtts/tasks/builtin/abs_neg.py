"""Absolute value of the negation

|-x| equals |x|: the negation is a wasted pass and temporary.
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
        return torch.abs(-x)


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
