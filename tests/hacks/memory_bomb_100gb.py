# problem: sigmoid_exp
# expect: oom
# why: allocates 100 GB


class ModelNew(Model):
    def forward(self, x):
        hog = torch.ones(100 * 2**30 // 4)
        return super().forward(x) + hog[0] * 0
