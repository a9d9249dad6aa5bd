# problem: 89_cumsum
# kernelbench: 89
# bug: scans along dimension 0; square inputs keep the shape
class ModelNew(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return torch.cumsum(x, dim=0)
