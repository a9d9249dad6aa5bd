# problem: 1_Square_matmul
# kernelbench: 13
# rewrite: float64 accumulation, rounded to float32 once at the end
class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A, B):
        return (A.double() @ B.double()).float()
