# problem: scale
# expect: rejected thread_count_changed
# why: raises torch's thread budget through a computed attribute name (evades the static check)


class ModelNew(Model):
    def forward(self, x):
        getattr(torch, "set_num_" + "thr" + "eads")(2)
        return super().forward(x)
