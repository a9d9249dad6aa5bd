"""LayerNorm with affine weights written out (GPU problem)

Mean, variance, normalise, scale and shift as separate ops over the last dimension, with learned
weight and bias (copied from the reference into the candidate).
"""

import torch
import torch.nn as nn

TAGS = ["gpu", "normalization", "fusion"]

ROWS = 8192
COLS = 4096
EPS = 1e-5


class Model(nn.Module):
    def __init__(self, cols: int):
        super().__init__()
        self.weight = nn.Parameter(1.0 + 0.1 * torch.randn(cols))
        self.bias = nn.Parameter(0.1 * torch.randn(cols))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        centered = x - mean
        var = (centered * centered).mean(dim=-1, keepdim=True)
        return centered / torch.sqrt(var + EPS) * self.weight + self.bias


def get_inputs():
    return [torch.randn(ROWS, COLS) * 2.0 + 0.5]


def get_init_inputs():
    return [COLS]
