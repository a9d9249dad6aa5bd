# problem: 63_Conv2d
# kernelbench: 63
# bug: a true convolution (kernel flipped) where torch's conv2d is a cross-correlation
class ModelNew(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=False):
        super().__init__()
        self.conv2d = nn.Conv2d(in_channels, out_channels, (kernel_size, kernel_size), stride=stride, padding=padding,
                                dilation=dilation, groups=groups, bias=bias)

    def forward(self, x):
        return torch.nn.functional.conv2d(x, self.conv2d.weight.flip(-1, -2))
