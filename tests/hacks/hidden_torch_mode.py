# problem: softmax_stable
# expect: rejected torch_mode
# why: keeps a torch function mode active (it would finish lazy outputs when the harness touches
#   them) and hides it from the mode check by replacing torch._C's stack-length functions through an
#   alias; the harness bound the originals before any candidate code ran
from torch.overrides import TorchFunctionMode


def _tf(self, func, types, args=(), kwargs=None):
    return func(*args, **(kwargs or {}))


_Mode = type("Finisher", (TorchFunctionMode,), {"__torch_" + "function__": _tf})
_Mode().__enter__()
C = torch._C
setattr(C, "_len_torch_function_stack", lambda: 0)
setattr(C, "_len_torch_dispatch_stack", lambda: 0)


class ModelNew(Model):
    def forward(self, x):
        return torch.softmax(x, dim=-1)
