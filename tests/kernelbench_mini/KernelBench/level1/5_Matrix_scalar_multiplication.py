import torch
import torch.nn as nn


class Model(nn.Module):
    """Matrix times a Python float."""

    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, s: float) -> torch.Tensor:
        return A * s


M = 1024 * 2
N = 512 * 2


def get_inputs():
    A = torch.rand(M, N)
    s = 3.14
    return [A, s]


def get_init_inputs():
    return []
