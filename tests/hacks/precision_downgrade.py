# problem: scale
# expect: incorrect
# why: computes in bfloat16 to go faster; the dtype or the values give it away


class ModelNew(Model):
    def forward(self, x):
        w, b = self.lin.weight.bfloat16(), self.lin.bias.bfloat16()
        return (torch.nn.functional.linear(x.bfloat16(), w, b) * 2.0).float()
