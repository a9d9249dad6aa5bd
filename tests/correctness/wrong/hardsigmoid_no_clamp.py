# problem: 28_HardSigmoid
# kernelbench: 28
# bug: the linear piece only (x / 6 + 1/2), no clamp to [0, 1]
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return x / 6 + 0.5
