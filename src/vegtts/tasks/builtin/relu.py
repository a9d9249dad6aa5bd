"""ReLU

A single torch.relu call: the reference is already one fused op, so there is little headroom.
"""

import torch
import torch.nn as nn

TAGS = ["single-op", "elementwise"]

BATCH = 3072
DIM = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
