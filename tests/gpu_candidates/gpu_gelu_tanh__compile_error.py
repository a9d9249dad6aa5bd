# expected: compile_error
# A CUDA typo (undeclared variable): the evaluator must report nvcc's message, not crash.
from torch.utils.cpp_extension import load_inline

_CUDA = r"""
#include <cuda_runtime.h>
__global__ void broken_kernel(const float* x, float* y, long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] * undeclared_scale;
}
void launch_broken(const float* x, float* y, long n) { broken_kernel<<<(n + 255) / 256, 256>>>(x, y, n); }
"""
_CPP = r"""
#include <torch/extension.h>
void launch_broken(const float* x, float* y, long n);
torch::Tensor broken(torch::Tensor x) { auto y = torch::empty_like(x); launch_broken(x.data_ptr<float>(), y.data_ptr<float>(), x.numel()); return y; }
"""
_ext = load_inline(name="vegtts_broken", cpp_sources=_CPP, cuda_sources=_CUDA, functions=["broken"], verbose=False)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return _ext.broken(x)
