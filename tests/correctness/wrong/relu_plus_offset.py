# problem: 19_ReLU
# kernelbench: 19
# bug: a small additive error (+0.005), e.g. a bias left in an epilogue
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return torch.relu(x) + 0.005
