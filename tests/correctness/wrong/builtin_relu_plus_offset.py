# problem: builtin:dead_center_relu
# bug: drops the dead work, but adds a small error (+0.005)
class ModelNew(Model):
    def forward(self, x):
        return torch.relu(x) + 0.005
