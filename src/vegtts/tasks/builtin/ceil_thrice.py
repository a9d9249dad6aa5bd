"""Ceil applied three times

ceil is idempotent: every call after the first is a wasted pass over the tensor.
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
        return torch.ceil(torch.ceil(torch.ceil(x)))


def get_inputs():
    return [torch.randn(BATCH, DIM) * 4]


def get_init_inputs():
    return []
