# problem: builtin:cumsum_matmul
# rewrite: torch.cumsum for the triangular matmul
class ModelNew(Model):
    def forward(self, x):
        return torch.cumsum(x, dim=-1)
