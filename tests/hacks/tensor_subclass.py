# problem: scale
# expect: rejected tensor_subclass
# why: returns a lazy tensor subclass that computes on first use


class Lazy(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return super().__torch_function__(func, types, args, kwargs or {})


class ModelNew(Model):
    def forward(self, x):
        return super().forward(x).as_subclass(Lazy)
