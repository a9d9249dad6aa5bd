# problem: 32_HardTanh
# kernelbench: 32
# rewrite: clamp
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return x.clamp(-1.0, 1.0)
