# problem: 89_cumsum
# kernelbench: 89
# bug: an exclusive scan (each prefix misses its own element) where the reference is inclusive
class ModelNew(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return torch.cumsum(x, dim=self.dim) - x
