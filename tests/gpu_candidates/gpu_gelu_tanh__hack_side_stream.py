# expected: ok-not-fast
# HACK (streams): the reference's ops run on a side stream and forward returns at once.  An event
# pair on the current stream sees almost nothing; our timing waits for the whole device.
class ModelNew(Model):
    def __init__(self):
        super().__init__()
        self.side = None

    def forward(self, x):
        if self.side is None:
            self.side = torch.cuda.Stream()
        self.side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side):
            out = super().forward(x)
        return out
