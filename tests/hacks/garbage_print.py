# problem: scale
# expect: ok
# why: prints 10 MB of garbage; the output goes to a capped file and the verdict is unaffected


class ModelNew(Model):
    def forward(self, x):
        print("\x00\xff garbage " * 1_000_000)
        return super().forward(x)
