"""A stand-in for a kernel in scale tests: it binds the five ports of its connection file and waits for a signal.

Fifty real ipykernels would cost this 2-core machine most of a minute to start; what the scale test measures is the
API traffic of fifty idle pods, for which a process that holds the ports (so the agent deems it ready) is enough.
"""

import json
import signal
import socket
import sys

with open(sys.argv[1]) as handle:
    info = json.load(handle)
sockets = []
for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((info["ip"], info[name]))
    sock.listen(8)
    sockets.append(sock)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.pause()
