# problem: gelu_erf
# expect: incorrect
# why: computes in float16 and casts back (faster on some hardware, not the same function)


class ModelNew(Model):
    def forward(self, x):
        return super().forward(x.half()).float()
