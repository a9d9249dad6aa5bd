import torch
import torch.nn as nn


class Model(nn.Module):
    """diag(A) @ B, written the slow way."""

    def __init__(self):
        super().__init__()

    def forward(self, A, B):
        return torch.diag(A) @ B


M = 512
N = 512


def get_inputs():
    A = torch.rand(N)
    B = torch.rand(N, M)
    return [A, B]


def get_init_inputs():
    return []
