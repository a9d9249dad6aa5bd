"""Matrix multiplication

A single torch.matmul of two dense matrices: BLAS already runs it, so there is little headroom.
"""

import torch
import torch.nn as nn

TAGS = ["single-op", "matmul"]

M = 512
K = 512
N = 512


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)


def get_inputs():
    return [torch.randn(M, K), torch.randn(K, N)]


def get_init_inputs():
    return []
