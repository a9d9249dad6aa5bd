# problem: 23_Softmax
# kernelbench: 23
# rewrite: exp(x - logsumexp(x))
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return torch.exp(x - torch.logsumexp(x, dim=1, keepdim=True))
