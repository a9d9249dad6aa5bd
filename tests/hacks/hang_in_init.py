# problem: softmax_exp
# expect: timeout
# why: never finishes building the model


class ModelNew(Model):
    def __init__(self, *args):
        super().__init__(*args)
        while True:
            pass
