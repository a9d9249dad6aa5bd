# problem: 63_Conv2d
# kernelbench: 63
# rewrite: im2col (F.unfold) and one matmul with the flattened weight
class ModelNew(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=False):
        super().__init__()
        self.conv2d = nn.Conv2d(in_channels, out_channels, (kernel_size, kernel_size), stride=stride, padding=padding,
                                dilation=dilation, groups=groups, bias=bias)

    def forward(self, x):
        w = self.conv2d.weight
        k = w.shape[-1]
        n, _, h, wd = x.shape
        cols = torch.nn.functional.unfold(x, kernel_size=k)
        out = w.reshape(w.shape[0], -1) @ cols
        return out.reshape(n, w.shape[0], h - k + 1, wd - k + 1)
