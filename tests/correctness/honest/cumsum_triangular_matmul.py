# problem: 89_cumsum
# kernelbench: none (KernelBench rows are 32768 long: a 32768 x 32768 triangle does not fit the memory limit)
# rewrite: prefix sums as a product with an upper-triangular matrix of ones
class ModelNew(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        n = x.shape[self.dim]
        moved = x.movedim(self.dim, -1)
        return (moved @ torch.triu(torch.ones(n, n, dtype=x.dtype))).movedim(-1, self.dim)
