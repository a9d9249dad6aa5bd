"""Log-softmax written as log(softmax(x))

Row log-softmax as a softmax followed by a separate log pass.
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
        return torch.log(torch.softmax(x, dim=-1))


def get_inputs():
    return [torch.randn(BATCH, DIM)]


def get_init_inputs():
    return []
