import torch
import torch.nn as nn


class Model(nn.Module):
    """ReLU on inputs in [0, 1): the identity there (a screen must say so)."""

    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


batch_size = 256
dim = 4096


def get_inputs():
    x = torch.rand(batch_size, dim)
    return [x]


def get_init_inputs():
    return []
