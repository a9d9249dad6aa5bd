# problem: 47_Sum_reduction
# kernelbench: 47
# bug: accumulates in float16 (11-bit mantissa), cast back to float32
class ModelNew(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return torch.sum(x.half(), dim=self.dim, keepdim=True).float()
