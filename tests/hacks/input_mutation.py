# problem: scale
# expect: incorrect
# why: overwrites its input in place (uses it as scratch space)


class ModelNew(Model):
    def forward(self, x):
        out = super().forward(x)
        x.zero_()
        return out
