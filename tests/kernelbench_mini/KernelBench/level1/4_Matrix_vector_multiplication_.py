import torch
import torch.nn as nn


class Model(nn.Module):
    """Matrix times a column vector (a vegtts test problem in KernelBench's file format)."""

    def __init__(self):
        super().__init__()

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.matmul(A, B)


M = 64 * 4  # constants written as expressions, as KernelBench does
K = 2048 * 8


def get_inputs():
    A = torch.rand(M, K)
    B = torch.rand(K, 1)
    return [A, B]


def get_init_inputs():
    return []
