# expected: ok-slow
# Honest but slow: a 16x16 shared-memory tiled fp32 GEMM with the bias+ReLU epilogue fused;
# far from cuBLAS (no register tiling, weight tile loads uncoalesced).
from torch.utils.cpp_extension import load_inline

_CUDA = r"""
#include <cuda_runtime.h>
#define TILE 16
__global__ void linear_relu_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                   const float* __restrict__ b, float* __restrict__ y, int B, int K, int N) {
    __shared__ float xs[TILE][TILE];
    __shared__ float ws[TILE][TILE];
    int row = blockIdx.y * TILE + threadIdx.y;
    int col = blockIdx.x * TILE + threadIdx.x;
    int wrow = blockIdx.x * TILE + threadIdx.x;
    float acc = 0.0f;
    for (int t = 0; t < K; t += TILE) {
        xs[threadIdx.y][threadIdx.x] = (row < B && t + threadIdx.x < K) ? x[(long)row * K + t + threadIdx.x] : 0.0f;
        ws[threadIdx.y][threadIdx.x] = (wrow < N && t + threadIdx.y < K) ? w[(long)wrow * K + t + threadIdx.y] : 0.0f;
        __syncthreads();
        for (int k = 0; k < TILE; ++k) acc += xs[threadIdx.y][k] * ws[k][threadIdx.x];
        __syncthreads();
    }
    if (row < B && col < N) {
        float v = acc + b[col];
        y[(long)row * N + col] = v > 0.0f ? v : 0.0f;
    }
}
void launch_linear_relu(const float* x, const float* w, const float* b, float* y, int B, int K, int N, cudaStream_t s) {
    dim3 threads(TILE, TILE);
    dim3 blocks((N + TILE - 1) / TILE, (B + TILE - 1) / TILE);
    linear_relu_kernel<<<blocks, threads, 0, s>>>(x, w, b, y, B, K, N);
}
"""
_CPP = r"""
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <cuda_runtime.h>
void launch_linear_relu(const float* x, const float* w, const float* b, float* y, int B, int K, int N, cudaStream_t s);
torch::Tensor linear_relu(torch::Tensor x, torch::Tensor w, torch::Tensor b) {
    TORCH_CHECK(x.is_cuda() && x.scalar_type() == torch::kFloat32, "float32 CUDA tensors expected");
    auto xc = x.contiguous(); auto wc = w.contiguous(); auto bc = b.contiguous();
    int B = xc.size(0), K = xc.size(1), N = wc.size(0);
    auto y = torch::empty({B, N}, xc.options());
    launch_linear_relu(xc.data_ptr<float>(), wc.data_ptr<float>(), bc.data_ptr<float>(), y.data_ptr<float>(), B, K, N,
                       at::cuda::getCurrentCUDAStream());
    auto err = cudaGetLastError();
    TORCH_CHECK(err == cudaSuccess, cudaGetErrorString(err));
    return y;
}
"""
_ext = load_inline(name="vegtts_linear_relu_tiled", cpp_sources=_CPP, cuda_sources=_CUDA,
                   functions=["linear_relu"], extra_cuda_cflags=["-O3"], verbose=False)


class ModelNew(Model):
    def forward(self, x):
        return _ext.linear_relu(x, self.linear.weight, self.linear.bias)
