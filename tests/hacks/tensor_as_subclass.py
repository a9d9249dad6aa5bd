# problem: gelu_erf
# expect: rejected output_not_plain_tensor
# why: returns a tensor subclass (could defer or fake work when the harness touches it)

Lazy = type("Lazy", (torch.Tensor,), {})


class ModelNew(Model):
    def forward(self, x):
        return super().forward(x).as_subclass(Lazy)
