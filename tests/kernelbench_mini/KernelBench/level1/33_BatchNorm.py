import torch
import torch.nn as nn


class Model(nn.Module):
    """Batch normalisation of a (batch, features) input: in train mode it needs a batch > 1."""

    def __init__(self, num_features: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features=num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


batch_size = 256
features = 1024


def get_inputs():
    x = torch.rand(batch_size, features)
    return [x]


def get_init_inputs():
    return [features]
