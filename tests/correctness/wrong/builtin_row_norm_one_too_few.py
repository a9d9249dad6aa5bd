# problem: builtin:row_norm
# bug: the norm misses the last element of each row
class ModelNew(Model):
    def forward(self, x):
        return torch.linalg.vector_norm(x[:, :-1], dim=-1)
