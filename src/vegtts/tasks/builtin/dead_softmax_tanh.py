"""Tanh after an unused softmax

The softmax is never used: dead work a rewrite drops.
"""

import torch
import torch.nn as nn

# Not "headroom": tanh itself costs most of the time, so dropping the dead softmax gains only
# ~1.2-1.3x on one thread, too little for a timing assertion on a shared machine.
TAGS = ["naive-short", "dead-work"]

BATCH = 1024
DIM = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(x, dim=-1)
        return torch.tanh(x)


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
