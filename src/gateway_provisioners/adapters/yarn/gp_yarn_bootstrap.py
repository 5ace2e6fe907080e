"""Start the gateway-provisioners agent inside a YARN container (kernel side: Python >= 3.9, standard library only).

YARN runs this as the application master's command, either directly (REST submission: the launch parameters and
the agent's source arrive base64-encoded in the container's environment, because YARN writes environment values
into a shell script without escaping quotes) or as Spark's primary resource (spark-submit: the parameters file and
the agent are localized into the working directory with ``--files``). It

1. reads the launch parameters and removes every copy of them from the environment the kernel will inherit;
2. sets ``advertise_ip``: the address of this node's interface that routes to the server's response address, since
   the agent binds the wildcard and the server must learn an address it can connect back to;
3. sends the kernel's output to the container's log folder (``kernel.log``) so YARN keeps it with the application;
4. runs the agent as ``__main__``.
"""

import base64
import json
import os
import runpy
import socket
import sys
import tempfile
import zlib

PARAMS_ENV = "GP_YARN_PARAMS_B64"
AGENT_ENV = "GP_YARN_AGENT_B64"


def read_params(argv):
    if "--params-file" in argv:
        path = argv[argv.index("--params-file") + 1]
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        try:
            os.remove(path)  # the token is in it; the localized copy is no longer needed
        except OSError:
            pass
        return json.loads(text)
    encoded = os.environ.pop(PARAMS_ENV, "")
    if not encoded:
        sys.stderr.write(f"gp-yarn-bootstrap: no launch parameters ({PARAMS_ENV} or --params-file)\n")
        sys.exit(2)
    return json.loads(base64.b64decode(encoded).decode("utf-8"))


def agent_file(argv):
    if "--agent" in argv:
        return argv[argv.index("--agent") + 1]
    encoded = os.environ.pop(AGENT_ENV, "")
    if not encoded:
        sys.stderr.write(f"gp-yarn-bootstrap: no agent ({AGENT_ENV} or --agent)\n")
        sys.exit(2)
    # The container's working folder, which YARN removes with the container (a copy in /tmp would stay behind).
    folder = os.getcwd() if os.access(os.getcwd(), os.W_OK) else tempfile.mkdtemp(prefix="gp-yarn-")
    path = os.path.join(folder, "gp_agent.py")
    with open(path, "wb") as handle:
        handle.write(zlib.decompress(base64.b64decode(encoded)))
    return path


def route_ip(address):
    """The local address this node uses to reach ``host:port`` (no packet is sent: UDP connect only routes)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        probe = socket.socket(family, socket.SOCK_DGRAM)
        try:
            probe.connect((host, int(port or 9)))
            return probe.getsockname()[0]
        finally:
            probe.close()
    except OSError:
        return socket.gethostbyname(socket.gethostname())


def main():
    argv = sys.argv[1:]
    params = read_params(argv)
    agent = agent_file(argv)
    if not params.get("advertise_ip") and params.get("response_address"):
        params["advertise_ip"] = route_ip(params["response_address"])
    log_dirs = [d for d in os.environ.get("LOG_DIRS", "").split(",") if d]
    if log_dirs and not params.get("log_file"):
        params["log_file"] = os.path.join(log_dirs[0], "kernel.log")
    os.environ["GP_LAUNCH_PARAMS"] = json.dumps(params)  # the agent removes it from the kernel's environment
    sys.argv = [agent, "--keep-log"] if params.get("log_file") else [agent]
    runpy.run_path(agent, run_name="__main__")


if __name__ == "__main__":
    main()
