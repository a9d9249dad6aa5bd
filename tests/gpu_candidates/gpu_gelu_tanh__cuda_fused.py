# expected: ok-fast
# One CUDA kernel: read x once, write y once (the reference makes ~8 passes).
from torch.utils.cpp_extension import load_inline

_CUDA = r"""
#include <cuda_runtime.h>
__global__ void gelu_tanh_kernel(const float* __restrict__ x, float* __restrict__ y, long n) {
    long stride = (long)gridDim.x * blockDim.x;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += stride) {
        float v = x[i];
        float inner = 0.7978845608028654f * (v + 0.044715f * v * v * v);
        y[i] = 0.5f * v * (1.0f + tanhf(inner));
    }
}
void launch_gelu_tanh(const float* x, float* y, long n, cudaStream_t stream) {
    int threads = 256;
    long blocks = (n + threads - 1) / threads;
    if (blocks > 132L * 32) blocks = 132L * 32;
    gelu_tanh_kernel<<<(int)blocks, threads, 0, stream>>>(x, y, n);
}
"""
_CPP = r"""
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime.h>
void launch_gelu_tanh(const float* x, float* y, long n, cudaStream_t stream);
torch::Tensor gelu_tanh(torch::Tensor x) {
    TORCH_CHECK(x.is_cuda() && x.scalar_type() == torch::kFloat32, "float32 CUDA tensor expected");
    auto xc = x.contiguous();
    auto y = torch::empty_like(xc);
    launch_gelu_tanh(xc.data_ptr<float>(), y.data_ptr<float>(), xc.numel(), at::cuda::getCurrentCUDAStream());
    auto err = cudaGetLastError();
    TORCH_CHECK(err == cudaSuccess, cudaGetErrorString(err));
    return y;
}
"""
_ext = load_inline(name="vegtts_gelu_tanh_fused", cpp_sources=_CPP, cuda_sources=_CUDA,
                   functions=["gelu_tanh"], extra_cuda_cflags=["-O3"], verbose=False)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return _ext.gelu_tanh(x)
