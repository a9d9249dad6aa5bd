# expected: ok-fast
# One Triton program per row: mean, variance, normalise and affine in registers.
import triton
import triton.language as tl


@triton.jit
def _layernorm_kernel(x_ptr, w_ptr, b_ptr, y_ptr, stride, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    x = tl.load(x_ptr + row * stride + offs, mask=mask, other=0.0)
    mean = tl.sum(x, axis=0) / n_cols
    c = tl.where(mask, x - mean, 0.0)
    var = tl.sum(c * c, axis=0) / n_cols
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0)
    tl.store(y_ptr + row * stride + offs, c * rstd * w + b, mask=mask)


class ModelNew(Model):
    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        rows, cols = x.shape
        _layernorm_kernel[(rows,)](x, self.weight, self.bias, y, x.stride(0), cols, EPS,
                                   BLOCK=triton.next_power_of_2(cols), num_warps=8)
        return y
