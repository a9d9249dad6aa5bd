"""ReLU applied twice

ReLU is idempotent, so the outer call only costs a second pass and a second output tensor.
"""

import torch
import torch.nn as nn

TAGS = ["naive-short", "redundant", "headroom"]

BATCH = 2048
DIM = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.relu(x))


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
