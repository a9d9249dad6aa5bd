# problem: builtin:row_norm
# rewrite: torch.linalg.vector_norm
class ModelNew(Model):
    def forward(self, x):
        return torch.linalg.vector_norm(x, dim=-1)
