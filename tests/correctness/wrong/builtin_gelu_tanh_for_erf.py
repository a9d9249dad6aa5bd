# problem: builtin:gelu_erf
# bug: the tanh approximation where the reference is the exact (erf) GELU
class ModelNew(Model):
    def forward(self, x):
        return torch.nn.functional.gelu(x, approximate="tanh")
