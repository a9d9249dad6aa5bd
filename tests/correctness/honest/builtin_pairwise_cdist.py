# problem: builtin:pairwise_dist
# rewrite: |x|^2 + |y|^2 - 2 x.y with a matmul (the usual fast form), clamped at 0 before the root
class ModelNew(Model):
    def forward(self, x, y):
        sq = (x * x).sum(-1)[:, None] + (y * y).sum(-1)[None, :] - 2.0 * (x @ y.t())
        return sq.clamp_min(0.0).sqrt()
