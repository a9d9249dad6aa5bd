# problem: 1_Square_matmul
# kernelbench: 1
# bug: B read in the wrong layout (A @ B.T); square inputs keep the shape
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A, B):
        return A @ B.t()
