"""ReLU written with torch.where

Elementwise ReLU spelled as a select against a zeros tensor. A single fused op does the same
in one pass without the mask and zeros temporaries.
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
        return torch.where(x > 0, x, torch.zeros_like(x))


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
