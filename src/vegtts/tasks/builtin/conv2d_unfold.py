"""2D convolution by unfold and matmul

A 3x3 convolution (stride 1, padding 1, no bias) written as im2col with F.unfold, a matmul with
the flattened weight and a reshape back to an image.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

TAGS = ["multi-op", "conv", "headroom"]

BATCH = 8
IN_CHANNELS = 32
OUT_CHANNELS = 64
HEIGHT = 32
WIDTH = 32
KERNEL = 3


class Model(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        fan_in = in_channels * kernel_size * kernel_size
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) / fan_in**0.5)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        cols = F.unfold(x, kernel_size=self.weight.shape[-1], padding=self.padding)
        out = self.weight.view(self.weight.shape[0], -1) @ cols
        return out.view(n, self.weight.shape[0], h, w)


def get_inputs():
    return [torch.randn(BATCH, IN_CHANNELS, HEIGHT, WIDTH)]


def get_init_inputs():
    return [IN_CHANNELS, OUT_CHANNELS, KERNEL]
