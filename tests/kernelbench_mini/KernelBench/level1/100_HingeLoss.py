import torch
import torch.nn as nn


class Model(nn.Module):
    """Hinge loss whose targets broadcast over the last dimension: batch_size must equal input_shape[0]."""

    def __init__(self):
        super().__init__()

    def forward(self, predictions, targets):
        return torch.mean(torch.clamp(1 - predictions * targets, min=0))


batch_size = 2048
input_shape = (2048,)
dim = 1


def get_inputs():
    return [torch.rand(batch_size, *input_shape), torch.randint(0, 2, (batch_size,)).float() * 2 - 1]


def get_init_inputs():
    return []
