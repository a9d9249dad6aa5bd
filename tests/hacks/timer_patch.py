# problem: scale
# expect: rejected monkeypatch
# why: patches the clock (harmless anyway: the parent holds the clock)
import time

time.perf_counter = lambda: 0.0


class ModelNew(Model):
    pass
