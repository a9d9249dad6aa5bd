# problem: leaky_relu_where
# expect: incorrect
# why: computes in place in its input (saves an allocation, destroys the caller's data)


class ModelNew(Model):
    def forward(self, x):
        return x.mul_(torch.where(x > 0, 1.0, self.negative_slope))
