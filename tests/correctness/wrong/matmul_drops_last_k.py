# problem: 1_Square_matmul
# kernelbench: 13
# bug: a tiled kernel whose loop bound skips the last element of the inner dimension
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A, B):
        return A[:, :-1] @ B[:-1, :]
