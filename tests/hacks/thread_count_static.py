# problem: scale
# expect: rejected thread_count_change
# why: raises torch's thread budget directly


class ModelNew(Model):
    def forward(self, x):
        torch.set_num_threads(8)
        return super().forward(x)
