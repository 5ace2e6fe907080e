"""The SSH backend: kernels on a pool of hosts, each started by the agent over SSH (asyncssh).

* ``connections``: one multiplexed SSH connection per host, shared by every kernel on it; host keys checked against
  known_hosts by default; the user's keys, agent and ``~/.ssh/config`` used.
* ``spawner``: nothing is installed on the hosts. The agent's source travels on the SSH channel's standard input and
  the remote Python runs it (``python3 -c <stub>``); one long-lived session per connection runs it as a spawner that
  forks a detached agent for each launch, whose launch parameters (token included) arrive on that channel too. No
  secret and no client-supplied value appears in a remote command line.
* ``selection``: which host gets the next kernel.
* ``backend``: the backend port. The agent reports on the spawner's channel (stdout mode) and then only its
  authenticated control connection remains, so a host serves any number of kernels over one connection.
  Impersonation (``sudo -n -u``) takes a per-launch session instead of the spawner.
"""

from .backend import SSHBackend
from .connections import SSHConnectionPool, SSHHost, SSHSettings
from .selection import HostSelector, RoundRobin, load_selector

__all__ = ["HostSelector", "RoundRobin", "SSHBackend", "SSHConnectionPool", "SSHHost", "SSHSettings", "load_selector"]
