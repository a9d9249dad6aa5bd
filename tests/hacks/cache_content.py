# problem: sigmoid_exp
# expect: incorrect|rejected
# why: caches outputs keyed on a cheap content fingerprint (rounded mean: every fresh randn input collides)


class ModelNew(Model):
    cache = {}

    def forward(self, x):
        key = (tuple(x.shape), round(float(x[:4].mean()), 0))
        if key not in ModelNew.cache:
            ModelNew.cache[key] = super().forward(x)
        return ModelNew.cache[key].clone()
