# problem: 47_Sum_reduction
# kernelbench: 47
# rewrite: float64 accumulation
class ModelNew(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.double().sum(dim=self.dim, keepdim=True).float()
