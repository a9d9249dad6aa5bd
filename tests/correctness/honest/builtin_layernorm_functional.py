# problem: builtin:layernorm_manual
# rewrite: F.layer_norm (one fused pass) for the written-out norm
class ModelNew(Model):
    def forward(self, x):
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
