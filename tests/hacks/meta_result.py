# problem: sigmoid_exp
# expect: rejected output_not_plain_tensor
# why: returns a result with no data (meta tensor): right shape and dtype, nothing computed


class ModelNew(Model):
    def forward(self, x):
        return torch.empty(x.shape, dtype=x.dtype, device="meta")
