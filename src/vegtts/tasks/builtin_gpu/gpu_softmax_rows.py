"""Row softmax written as max, subtract, exp, sum, divide (GPU problem)

Numerically stable softmax over the last dimension as five passes over the tensor; a fused
kernel that keeps a row in registers reads it once.
"""

import torch
import torch.nn as nn

TAGS = ["gpu", "reduction", "fusion"]

ROWS = 8192
COLS = 4096


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = x - x.max(dim=-1, keepdim=True).values
        e = torch.exp(shifted)
        return e / e.sum(dim=-1, keepdim=True)


def get_inputs():
    return [torch.randn(ROWS, COLS) * 3.0]


def get_init_inputs():
    return []
