# problem: relu_where
# expect: incorrect|rejected
# why: caches outputs keyed on the input's data_ptr (allocators reuse addresses, so it replays a stale output)


class ModelNew(Model):
    cache = {}

    def forward(self, x):
        key = x.data_ptr()
        if key not in ModelNew.cache:
            ModelNew.cache[key] = super().forward(x)
        return ModelNew.cache[key]
