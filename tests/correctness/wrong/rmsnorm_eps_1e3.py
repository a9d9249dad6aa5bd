# problem: 36_RMSNorm
# kernelbench: 36
# bug: eps 1e-3 instead of the module's 1e-5
class ModelNew(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps

    def forward(self, x):
        return x / torch.sqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-3)
