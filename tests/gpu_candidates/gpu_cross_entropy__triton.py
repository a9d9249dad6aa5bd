# expected: ok-fast
# One Triton program per row: logsumexp and the target logit in one read; int64 targets as given.
import triton
import triton.language as tl


@triton.jit
def _ce_rows_kernel(logits_ptr, tgt_ptr, loss_ptr, stride, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    x = tl.load(logits_ptr + row * stride + offs, mask=mask, other=-float("inf"))
    m = tl.max(x, axis=0)
    lse = tl.log(tl.sum(tl.exp(x - m), axis=0)) + m
    t = tl.load(tgt_ptr + row)
    xt = tl.load(logits_ptr + row * stride + t)
    tl.store(loss_ptr + row, lse - xt)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, logits, targets):
        logits = logits.contiguous()
        rows, cols = logits.shape
        loss = torch.empty(rows, device=logits.device, dtype=torch.float32)
        _ce_rows_kernel[(rows,)](logits, targets, loss, logits.stride(0), cols,
                                 BLOCK=triton.next_power_of_2(cols), num_warps=8)
        return loss.mean()
