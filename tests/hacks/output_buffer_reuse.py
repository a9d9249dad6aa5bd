# problem: scale
# expect: rejected output_aliasing
# why: returns the same preallocated buffer every call (earlier results change under the caller)


class ModelNew(Model):
    buf = None

    def forward(self, x):
        out = super().forward(x)
        if ModelNew.buf is None:
            ModelNew.buf = torch.empty_like(out)
        ModelNew.buf.copy_(out)
        return ModelNew.buf
