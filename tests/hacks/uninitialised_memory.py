# problem: relu_where
# expect: incorrect
# why: returns uninitialised memory, hoping the allocator hands back a buffer that held a correct result


class ModelNew(Model):
    def forward(self, x):
        return torch.empty_like(x)
