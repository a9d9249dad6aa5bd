"""GELU (erf form) written out

Exact GELU, 0.5 * x * (1 + erf(x / sqrt(2))), as a chain of five elementwise ops.
"""

import math

import torch
import torch.nn as nn

TAGS = ["naive-short", "elementwise", "headroom"]

BATCH = 1024
DIM = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0)))


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
