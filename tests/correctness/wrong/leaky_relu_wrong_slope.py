# problem: 20_LeakyReLU
# kernelbench: 20
# bug: slope 0.02 instead of the module's 0.01; only negative inputs show it
class ModelNew(nn.Module):
    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return torch.where(x > 0, x, 0.02 * x)
