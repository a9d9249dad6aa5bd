# problem: gelu_erf
# expect: rejected patched_function
# why: replaces the clock through the module dict (no attribute assignment for the static check to see)
import time

vars(time)["perf_" + "counter_ns"] = lambda: 0


class ModelNew(Model):
    pass
