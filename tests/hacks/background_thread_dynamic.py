# problem: relu_where
# expect: rejected background_thread
# why: returns an empty tensor and fills it from a thread (module reached through sys, no import to see)
import sys

_threads = vars(sys)["modu" + "les"]["threading"]


class ModelNew(Model):
    def forward(self, x):
        out = torch.empty_like(x)

        def fill():
            _threads.Event().wait(0.05)
            torch.clamp(x, min=0, out=out)

        _threads.Thread(target=fill).start()
        return out
