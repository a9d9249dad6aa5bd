# problem: 23_Softmax
# kernelbench: 23
# rewrite: exp of the max-shifted row over its sum
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        e = torch.exp(x - x.max(dim=1, keepdim=True).values)
        return e / e.sum(dim=1, keepdim=True)
