"""Imported only by the screening fork server (`tasks.probe`): one tiny meta-device footprint and
one tiny forward, so that the lazy set-up of torch's dispatch and flop-counting machinery (seconds)
happens once in the server, not again in every forked child."""

from vegtts.tasks.probe import meta_footprint

_TINY = """
import torch
import torch.nn as nn

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.linear(x)).sum(0)

def get_inputs():
    return [torch.rand(2, 4)]

def get_init_inputs():
    return []
"""

meta_footprint(_TINY)
