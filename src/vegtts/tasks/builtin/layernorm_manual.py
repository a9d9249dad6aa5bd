"""LayerNorm written out

Layer normalisation over the last dimension with a learned scale and shift, written as
separate mean, variance, normalise and affine steps.
"""

import torch
import torch.nn as nn

TAGS = ["multi-op", "reduction", "headroom"]

BATCH = 2048
DIM = 1024
EPS = 1e-5


class Model(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(dim))
        self.bias = nn.Parameter(0.1 * torch.randn(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
        x_hat = (x - mean) / torch.sqrt(var + self.eps)
        return x_hat * self.weight + self.bias


def get_inputs():
    return [torch.randn(BATCH, DIM) * 2 + 0.5]


def get_init_inputs():
    return [DIM, EPS]
