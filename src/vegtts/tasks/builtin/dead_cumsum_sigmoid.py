"""Sigmoid after an unused cumulative sum

The running sums are never used: dead work a rewrite drops.
"""

import torch
import torch.nn as nn

TAGS = ["naive-short", "dead-work", "headroom"]

BATCH = 1024
DIM = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        totals = torch.cumsum(x, dim=-1)
        return torch.sigmoid(x)


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
