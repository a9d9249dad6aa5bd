# problem: 40_LayerNorm
# kernelbench: 40
# rewrite: mean and biased variance written out, rsqrt, then the affine step
class ModelNew(nn.Module):
    def __init__(self, normalized_shape: tuple):
        super().__init__()
        self.ln = nn.LayerNorm(normalized_shape=normalized_shape)

    def forward(self, x):
        dims = tuple(range(-len(self.ln.normalized_shape), 0))
        mean = x.mean(dim=dims, keepdim=True)
        centred = x - mean
        var = (centred * centred).mean(dim=dims, keepdim=True)
        return centred * torch.rsqrt(var + self.ln.eps) * self.ln.weight + self.ln.bias
