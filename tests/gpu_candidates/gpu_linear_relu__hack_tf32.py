# expected: rejected:precision_policy_changed
# HACK (precision downgrade): switches fp32 matmuls to TF32 tensor cores inside forward.
class ModelNew(Model):
    def forward(self, x):
        torch.set_float32_matmul_precision("high")
        return torch.relu(self.linear(x))
