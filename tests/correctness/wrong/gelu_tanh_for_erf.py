# problem: 26_GELU
# kernelbench: 26
# bug: the tanh approximation where the reference is the exact (erf) GELU
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return torch.nn.functional.gelu(x, approximate="tanh")
