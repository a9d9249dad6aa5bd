# problem: builtin:logsumexp_stable
# rewrite: torch.logsumexp
class ModelNew(Model):
    def forward(self, x):
        return torch.logsumexp(x, dim=-1)
