"""Batched matrix product by broadcast multiply and sum

a @ b for a batch of matrices, spelled as an outer broadcast (B x N x K x M temporary) and a
sum over the shared dimension.
"""

import torch
import torch.nn as nn

TAGS = ["naive-short", "matmul", "headroom"]

BATCH = 16
N = 64
K = 96
M = 64


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(-2)


def get_inputs():
    return [torch.randn(BATCH, N, K), torch.randn(BATCH, K, M)]


def get_init_inputs():
    return []
