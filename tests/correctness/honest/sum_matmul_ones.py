# problem: 47_Sum_reduction
# kernelbench: 47
# rewrite: the reduction as a product with a vector of ones
class ModelNew(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        moved = x.movedim(self.dim, -1)
        summed = moved @ torch.ones(moved.shape[-1], 1, dtype=x.dtype)
        return summed.movedim(-1, self.dim)
