"""Cumulative sum by triangular matmul

Prefix sums along the last dimension, as a product with an upper-triangular matrix of ones:
O(D^2) work per row for an O(D) result.
"""

import torch
import torch.nn as nn

TAGS = ["naive-short", "matmul", "headroom"]

BATCH = 256
DIM = 1024


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ torch.triu(torch.ones(x.shape[-1], x.shape[-1], dtype=x.dtype, device=x.device))


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
