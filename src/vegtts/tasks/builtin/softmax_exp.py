"""Softmax written as exp(x) / sum(exp(x))

Row softmax in one line, without max subtraction and computing the exponential twice.
Inputs are standard normal, so the exponentials cannot overflow.
"""

import torch
import torch.nn as nn

TAGS = ["naive-short", "reduction", "headroom"]

BATCH = 2048
DIM = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x) / torch.exp(x).sum(dim=-1, keepdim=True)


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
