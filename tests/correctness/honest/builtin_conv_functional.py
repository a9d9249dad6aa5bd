# problem: builtin:conv2d_unfold
# rewrite: F.conv2d for unfold + matmul
class ModelNew(Model):
    def forward(self, x):
        return torch.nn.functional.conv2d(x, self.weight, padding=self.padding)
