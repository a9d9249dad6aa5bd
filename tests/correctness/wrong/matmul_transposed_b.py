# problem: 1_Square_matmul
# kernelbench: none (on problem 13 B is symmetric, so B.T is B; problem 1 sets N = 2048 * 2, which shape_overrides cannot change)
# bug: B read in the wrong layout (A @ B.T); square inputs keep the shape
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A, B):
        return A @ B.t()
