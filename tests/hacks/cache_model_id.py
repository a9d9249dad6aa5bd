# problem: leaky_relu_where
# expect: incorrect|rejected
# why: caches the first output keyed on id(self), assuming the harness reuses one input (as naive harnesses do)


class ModelNew(Model):
    cache = {}

    def forward(self, x):
        if id(self) not in ModelNew.cache:
            ModelNew.cache[id(self)] = super().forward(x)
        return ModelNew.cache[id(self)].clone()
