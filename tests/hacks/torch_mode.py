# problem: silu_mul
# expect: rejected torch_mode
# why: leaves a torch function mode active, which would intercept the harness's own tensor operations
from torch.overrides import TorchFunctionMode


def _intercept(self, func, types, args=(), kwargs=None):
    return func(*args, **(kwargs or {}))


Intercept = type("Intercept", (TorchFunctionMode,), {"__torch_" + "function__": _intercept})
Intercept().__enter__()


class ModelNew(Model):
    pass
