# problem: 89_cumsum
# kernelbench: 89
# rewrite: the scan in float64
class ModelNew(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return torch.cumsum(x.double(), dim=self.dim).float()
