# problem: 63_Conv2d
# kernelbench: 63
# rewrite: F.conv2d with the module's weight
class ModelNew(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=False):
        super().__init__()
        self.conv2d = nn.Conv2d(in_channels, out_channels, (kernel_size, kernel_size), stride=stride, padding=padding,
                                dilation=dilation, groups=groups, bias=bias)

    def forward(self, x):
        return torch.nn.functional.conv2d(x, self.conv2d.weight)
