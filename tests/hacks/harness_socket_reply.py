# problem: relu_thrice
# expect: rejected harness_reply
# why: answers the parent on the harness's own socket from inside forward: after the first call of
#   a timed batch it writes the harness's `{"ok": true}` reply itself, so the parent would stop the
#   clock, and swallows the harness's real reply with a patched socket.sendall.  It fires on the first
#   page-aligned input, which may instead be a correctness trial's (its reply read as the trial's) or a
#   pair-history trial's (its fake then equals the real acknowledgement: before every reply had to echo
#   its request's nonce, that came back `ok`, with the honest torch.relu speedup).  Every reply must
#   carry its request's nonce, so each of these is harness_reply
import os
import struct
import sys

_payload = b'{"ok": true}'
_fake = struct.pack("!cQ", b"J", len(_payload)) + _payload
_S = vars(sys)["modu" + "les"]["socket"].socket
_orig_sendall = _S.sendall
_swallow = [0]
_seen = [0]


def _sendall(self, data, *args):
    if _swallow[0] and bytes(data[:1]) == b"J":
        _swallow[0] -= 1
        return None
    return _orig_sendall(self, data, *args)


setattr(_S, "sendall", _sendall)


def _socket_fd():
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + name).startswith("socket:"):
                return int(name)
        except OSError:
            pass
    return -1


class ModelNew(Model):
    def forward(self, x):
        y = torch.relu(x)
        if x.data_ptr() % 4096 == 0 and _seen[0] == 0:
            _seen[0] += 1
            fd = _socket_fd()
            if fd >= 0:
                os.write(fd, _fake)
                _swallow[0] += 1
        return y
