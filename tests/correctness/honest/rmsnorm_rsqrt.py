# problem: 36_RMSNorm
# kernelbench: 36
# rewrite: multiply by rsqrt instead of dividing by sqrt
class ModelNew(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)
