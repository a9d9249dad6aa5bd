"""ReLU after an unused centring

The centred copy is computed and never used: dead work a rewrite drops.
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
        centered = x - x.mean(dim=-1, keepdim=True)
        return torch.relu(x)


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
