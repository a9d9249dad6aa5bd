# problem: 28_HardSigmoid
# kernelbench: 28
# rewrite: clamp(x / 6 + 1/2, 0, 1)
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)
