# expected: ok-fast
# One CUDA kernel with float4 loads: reads x and y once, writes once (reference: 3 kernels).
from torch.utils.cpp_extension import load_inline

_CUDA = r"""
#include <cuda_runtime.h>
__global__ void scale_add_kernel(const float4* __restrict__ x, const float4* __restrict__ y, float4* __restrict__ z, long n4) {
    long stride = (long)gridDim.x * blockDim.x;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n4; i += stride) {
        float4 a = x[i], b = y[i], c;
        c.x = 1.5f * a.x + (-0.5f) * b.x;
        c.y = 1.5f * a.y + (-0.5f) * b.y;
        c.z = 1.5f * a.z + (-0.5f) * b.z;
        c.w = 1.5f * a.w + (-0.5f) * b.w;
        z[i] = c;
    }
}
void launch_scale_add(const float* x, const float* y, float* z, long n, cudaStream_t s) {
    long n4 = n / 4;
    int threads = 256;
    long blocks = (n4 + threads - 1) / threads;
    if (blocks > 132L * 16) blocks = 132L * 16;
    scale_add_kernel<<<(int)blocks, threads, 0, s>>>((const float4*)x, (const float4*)y, (float4*)z, n4);
}
"""
_CPP = r"""
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime.h>
void launch_scale_add(const float* x, const float* y, float* z, long n, cudaStream_t s);
torch::Tensor scale_add(torch::Tensor x, torch::Tensor y) {
    TORCH_CHECK(x.is_cuda() && x.scalar_type() == torch::kFloat32 && x.numel() % 4 == 0, "float32 CUDA, numel % 4 == 0");
    auto xc = x.contiguous(); auto yc = y.contiguous();
    auto z = torch::empty_like(xc);
    launch_scale_add(xc.data_ptr<float>(), yc.data_ptr<float>(), z.data_ptr<float>(), xc.numel(), at::cuda::getCurrentCUDAStream());
    auto err = cudaGetLastError();
    TORCH_CHECK(err == cudaSuccess, cudaGetErrorString(err));
    return z;
}
"""
_ext = load_inline(name="vegtts_scale_add_fused", cpp_sources=_CPP, cuda_sources=_CUDA,
                   functions=["scale_add"], extra_cuda_cflags=["-O3"], verbose=False)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x, y):
        return _ext.scale_add(x, y)
