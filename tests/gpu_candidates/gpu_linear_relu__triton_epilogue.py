# expected: ok-not-fast
# cuBLAS GEMM without bias, then one Triton kernel for bias + ReLU: the same number of kernels
# as the reference's addmm + relu, so about as fast.
import triton
import triton.language as tl


@triton.jit
def _bias_relu_kernel(y_ptr, b_ptr, n, n_cols, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    y = tl.load(y_ptr + offs, mask=mask, other=0.0)
    b = tl.load(b_ptr + offs % n_cols, mask=mask, other=0.0)
    tl.store(y_ptr + offs, tl.maximum(y + b, 0.0), mask=mask)


class ModelNew(Model):
    def forward(self, x):
        y = torch.mm(x, self.linear.weight.t())
        n = y.numel()
        _bias_relu_kernel[(triton.cdiv(n, 1024),)](y, self.linear.bias, n, y.shape[1], BLOCK=1024)
        return y
