"""Sign written with nested torch.where

The sign function spelled as two nested selects against ones, minus ones and zeros.
"""

import torch
import torch.nn as nn

TAGS = ["naive-short", "elementwise", "headroom"]

BATCH = 1024
DIM = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, torch.ones_like(x), torch.where(x < 0, -torch.ones_like(x), torch.zeros_like(x)))


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
