"""Leaky ReLU written with torch.where

Leaky ReLU with a configurable negative slope, spelled as a select between x and slope * x.
"""

import torch
import torch.nn as nn

TAGS = ["naive-short", "elementwise", "headroom"]

BATCH = 1024
DIM = 2048
NEGATIVE_SLOPE = 0.05


class Model(nn.Module):
    def __init__(self, negative_slope: float):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x, self.negative_slope * x)


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return [NEGATIVE_SLOPE]
