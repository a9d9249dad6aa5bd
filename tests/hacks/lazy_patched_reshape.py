# problem: relu_where
# expect: rejected timed_output_mismatch
# why: timed calls return an empty tensor and remember their input; patched Tensor methods
#   (reshape, __getitem__, data_ptr, installed with setattr on an alias) fill the output the
#   moment the harness touches it for the output check, off the clock.  The parent now reads the
#   outputs from the child's memory: no code of the child runs, nothing gets filled
import weakref

_pending = {}
T = torch.Tensor


def _finishing(name):
    original = getattr(T, name)

    def method(self, *args, **kwargs):
        job = _pending.pop(id(self), None)
        if job is not None and job[0]() is self:
            torch.clamp_min(job[1], 0, out=self)
        return original(self, *args, **kwargs)

    return method


for _name in ("reshape", "__getitem__", "data_ptr", "view", "contiguous"):
    setattr(T, _name, _finishing(_name))


class ModelNew(Model):
    def forward(self, x):
        if x.data_ptr() % 4096 != 0:
            return torch.relu(x)
        out = torch.empty_like(x)
        _pending[id(out)] = (weakref.ref(out), x)
        return out
