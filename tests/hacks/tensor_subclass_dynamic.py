# problem: scale
# expect: rejected output_not_plain_tensor
# why: a tensor subclass without any banned name in the source


class Sneaky(torch.Tensor):
    pass


class ModelNew(Model):
    def forward(self, x):
        return super().forward(x).as_subclass(Sneaky)
