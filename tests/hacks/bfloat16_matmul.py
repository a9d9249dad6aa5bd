# problem: matmul
# expect: incorrect
# why: multiplies in bfloat16 and casts back


class ModelNew(Model):
    def forward(self, a, b):
        return torch.matmul(a.bfloat16(), b.bfloat16()).float()
