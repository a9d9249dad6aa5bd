# problem: 40_LayerNorm
# kernelbench: 40
# bug: eps 1e-3 instead of the module's 1e-5
class ModelNew(nn.Module):
    def __init__(self, normalized_shape: tuple):
        super().__init__()
        self.ln = nn.LayerNorm(normalized_shape=normalized_shape)

    def forward(self, x):
        return torch.nn.functional.layer_norm(x, self.ln.normalized_shape, self.ln.weight, self.ln.bias, 1e-3)
