# problem: relu_thrice
# expect: rejected untimed_work
# why: computes every timed call's output while the harness maps the round's inputs (an untimed
#   request), through a wrapper around torch.frombuffer put in place without an attribute
#   assignment; the timed call only looks the result up.  The load's CPU is the child's process
#   clock: charged to the candidate, and rejected because it is large and recurs every round
_orig_frombuffer = torch.frombuffer
_ready = {}


def _frombuffer(*args, **kwargs):
    t = _orig_frombuffer(*args, **kwargs)
    if t.dim() == 1 and t.numel() == 2048 * 2048:
        _ready[t.data_ptr()] = torch.relu(t).view(2048, 2048)
    return t


vars(torch)["frombuffer"] = _frombuffer


class ModelNew(Model):
    def forward(self, x):
        out = _ready.pop(x.data_ptr(), None)
        return out if out is not None and out.shape == x.shape else torch.relu(x)
