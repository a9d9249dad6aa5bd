"""Row L2 norm written as sqrt(sum(x * x))

Euclidean norm of every row, via an elementwise square, a row sum and a square root.
"""

import torch
import torch.nn as nn

TAGS = ["naive-short", "reduction", "headroom"]

BATCH = 3072
DIM = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((x * x).sum(dim=-1))


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
