# problem: 20_LeakyReLU
# kernelbench: 20
# rewrite: a select between x and slope * x
class ModelNew(nn.Module):
    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return torch.where(x >= 0, x, x * self.negative_slope)
