"""Sigmoid written as 1 / (1 + exp(-x))

The logistic function spelled out with four elementwise ops and three temporaries.
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
        return 1 / (1 + torch.exp(-x))


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
