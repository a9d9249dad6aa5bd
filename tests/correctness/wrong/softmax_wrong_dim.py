# problem: 23_Softmax
# kernelbench: 23
# bug: normalised over the batch dimension instead of the feature dimension
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return torch.softmax(x, dim=0)
