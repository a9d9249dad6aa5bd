# problem: 26_GELU
# kernelbench: 26
# rewrite: the erf formula written out
import math


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return 0.5 * x * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))
