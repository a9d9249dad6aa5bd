# problem: builtin:layernorm_manual
# bug: eps 1e-3 instead of the module's 1e-5
class ModelNew(Model):
    def forward(self, x):
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), self.weight, self.bias, 1e-3)
