# problem: 1_Square_matmul
# kernelbench: 13
# rewrite: einsum instead of matmul
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A, B):
        return torch.einsum("ik,kj->ij", A, B)
