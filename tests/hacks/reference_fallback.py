# problem: hardswish_clamp
# settings: allow_reference_calls=false
# expect: rejected reference_call
# why: tries the reference inside try/except and swallows the guard's error, then returns its own answer


class ModelNew(Model):
    def forward(self, x):
        try:
            return getattr(type(self).__mro__[1], "for" + "ward")(self, x)
        except Exception:
            return x * torch.clamp(x + 3, 0, 6) / 6
