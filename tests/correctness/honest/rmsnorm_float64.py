# problem: 36_RMSNorm
# kernelbench: 36
# rewrite: the whole norm in float64, rounded to float32 at the end
class ModelNew(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps

    def forward(self, x):
        xd = x.double()
        return (xd / torch.sqrt((xd * xd).mean(dim=1, keepdim=True) + self.eps)).float()
