"""Absolute value after an unused rescaling

The rescaled copy is computed and never used: dead work a rewrite drops.
"""

import torch
import torch.nn as nn

TAGS = ["naive-short", "dead-work", "headroom"]

BATCH = 2048
DIM = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = x * 0.5 + 1.0
        return torch.abs(x)


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
