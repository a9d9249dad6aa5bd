# expected: ok-slow
# Honest but slow: one thread per row, three sequential passes, uncoalesced loads.
from torch.utils.cpp_extension import load_inline

_CUDA = r"""
#include <cuda_runtime.h>
__global__ void softmax_rows_kernel(const float* __restrict__ x, float* __restrict__ y, int rows, int cols) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* xr = x + (long)r * cols;
    float* yr = y + (long)r * cols;
    float m = -INFINITY;
    for (int c = 0; c < cols; ++c) m = fmaxf(m, xr[c]);
    float s = 0.0f;
    for (int c = 0; c < cols; ++c) s += expf(xr[c] - m);
    for (int c = 0; c < cols; ++c) yr[c] = expf(xr[c] - m) / s;
}
void launch_softmax_rows(const float* x, float* y, int rows, int cols, cudaStream_t stream) {
    int threads = 128;
    softmax_rows_kernel<<<(rows + threads - 1) / threads, threads, 0, stream>>>(x, y, rows, cols);
}
"""
_CPP = r"""
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime.h>
void launch_softmax_rows(const float* x, float* y, int rows, int cols, cudaStream_t stream);
torch::Tensor softmax_rows(torch::Tensor x) {
    TORCH_CHECK(x.is_cuda() && x.dim() == 2 && x.scalar_type() == torch::kFloat32, "2-D float32 CUDA tensor expected");
    auto xc = x.contiguous();
    auto y = torch::empty_like(xc);
    launch_softmax_rows(xc.data_ptr<float>(), y.data_ptr<float>(), xc.size(0), xc.size(1), at::cuda::getCurrentCUDAStream());
    auto err = cudaGetLastError();
    TORCH_CHECK(err == cudaSuccess, cudaGetErrorString(err));
    return y;
}
"""
_ext = load_inline(name="vegtts_softmax_thread_per_row", cpp_sources=_CPP, cuda_sources=_CUDA,
                   functions=["softmax_rows"], extra_cuda_cflags=["-O3"], verbose=False)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return _ext.softmax_rows(x)
