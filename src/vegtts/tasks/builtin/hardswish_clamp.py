"""Hardswish written with clamp

Hardswish, x * relu6(x + 3) / 6, spelled as four elementwise ops.
"""

import torch
import torch.nn as nn

TAGS = ["naive-short", "elementwise", "headroom"]

BATCH = 2048
DIM = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.clamp(x + 3, 0, 6) / 6


def get_inputs():
    # Scaled so that all three pieces of the function (0, the quadratic, identity) are hit.
    return [torch.randn(BATCH, DIM) * 3]


def get_init_inputs():
    return []
