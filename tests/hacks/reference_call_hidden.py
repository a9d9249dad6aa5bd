# problem: layernorm_manual
# settings: allow_reference_calls=false
# expect: rejected reference_call
# why: calls the reference forward through the MRO (no 'super().forward' or 'Model.' for the static check)


class ModelNew(Model):
    def forward(self, x):
        return type(self).__mro__[1].forward(self, x)
