# problem: 26_GELU
# kernelbench: 26
# bug: a small additive error (+0.005)
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return torch.nn.functional.gelu(x) + 0.005
