"""Pairwise Euclidean distances by broadcasting

All distances between the rows of x and the rows of y, materialising every difference vector
(an N x M x D temporary) before reducing it.
"""

import torch
import torch.nn as nn

TAGS = ["naive-short", "reduction", "headroom"]

N = 192
M = 256
DIM = 96


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x[:, None, :] - y[None, :, :]).pow(2).sum(-1).sqrt()


def get_inputs():
    return [torch.randn(N, DIM), torch.randn(M, DIM)]


def get_init_inputs():
    return []
