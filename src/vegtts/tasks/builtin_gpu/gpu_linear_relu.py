"""Linear layer followed by ReLU, fp32 (GPU problem)

A compute-bound GEMM (cuBLAS in fp32; TF32 is off unless evaluation.tf32 is set) with a bias
and ReLU epilogue that PyTorch runs as separate kernels.
"""

import torch
import torch.nn as nn

TAGS = ["gpu", "matmul", "fusion"]

BATCH = 4096
IN_FEATURES = 4096
OUT_FEATURES = 4096
RTOL = 1e-4
ATOL = 1e-4


class Model(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x))


def get_inputs():
    return [torch.randn(BATCH, IN_FEATURES)]


def get_init_inputs():
    return [IN_FEATURES, OUT_FEATURES]
