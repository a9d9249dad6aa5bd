# problem: builtin:cumsum_matmul
# bug: an exclusive scan where the reference is inclusive
class ModelNew(Model):
    def forward(self, x):
        return torch.cumsum(x, dim=-1) - x
