# problem: 1_Square_matmul
# kernelbench: 13
# rewrite: the inner dimension in tiles of 32, partial products summed in order (every tile, the last one partial)
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A, B):
        out = torch.zeros(A.shape[0], B.shape[1], dtype=A.dtype)
        for k in range(0, A.shape[1], 32):
            out += A[:, k:k + 32] @ B[k:k + 32, :]
        return out
