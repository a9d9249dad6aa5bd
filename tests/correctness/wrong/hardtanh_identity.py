# problem: 32_HardTanh
# kernelbench: 32
# bug: returns its input; right only where |x| <= 1
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return x * 1.0
