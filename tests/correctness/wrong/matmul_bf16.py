# problem: 1_Square_matmul
# kernelbench: 13
# bug: products and sums in bfloat16 (8-bit mantissa), cast back to float32
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A, B):
        return (A.to(torch.bfloat16) @ B.to(torch.bfloat16)).to(torch.float32)
