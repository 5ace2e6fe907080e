"""Real OpenSSH servers for tests and benchmarks: key-only, own config, on loopback or in network namespaces.

Never the system's sshd: each server gets a temporary folder with its own host key, authorized key, config and log,
runs as a child process (``sshd -D -e``) so its pid is known, and is stopped by the context manager.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def find_sshd() -> str | None:
    found = shutil.which("sshd") or next((p for p in SSHD_CANDIDATES if os.path.exists(p)), None)
    return str(Path(found).resolve()) if found else None  # sshd re-executes itself: it wants an absolute path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class SSHKeys:
    """A client key pair and the known_hosts file that trusts the servers' shared host key."""

    folder: Path
    client_key: Path = field(init=False)
    host_key: Path = field(init=False)
    known_hosts: Path = field(init=False)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.client_key = self.folder / "client_ed25519"
        self.host_key = self.folder / "host_ed25519"
        for key in (self.client_key, self.host_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        self.known_hosts = self.folder / "known_hosts"
        self.known_hosts.write_text("")

    def trust(self, host: str, port: int) -> None:
        """Add ``host:port`` with the servers' host key to known_hosts."""
        public = self.host_key.with_suffix(".pub").read_text().split()[:2]
        name = host if port == 22 else f"[{host}]:{port}"
        with self.known_hosts.open("a") as handle:
            handle.write(f"{name} {' '.join(public)}\n")


@dataclass
class SSHServer:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def write_config(folder: Path, keys: SSHKeys, host: str, port: int) -> Path:
    authorized = folder / "authorized_keys"
    authorized.write_text(keys.client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                f"ListenAddress {host}",
                f"HostKey {keys.host_key}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                "AllowTcpForwarding yes",
                "MaxStartups 100:30:200",
                "LogLevel VERBOSE",
                "",
            ]
        )
    )
    return config


@contextlib.contextmanager
def run_sshd(
    folder: Path, keys: SSHKeys, host: str = "127.0.0.1", port: int | None = None, netns: str | None = None,
    hostname: str | None = None,
) -> Iterator[SSHServer]:  # fmt: skip
    """Start a key-only sshd on ``host:port`` (optionally inside network namespace ``netns`` with its own hostname)."""
    sshd = find_sshd()
    if sshd is None:
        raise FileNotFoundError("sshd is not installed (Debian: apt-get install openssh-server)")
    Path("/run/sshd").mkdir(exist_ok=True)  # Debian's privilege-separation folder
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    config = write_config(folder, keys, host, port)
    subprocess.run([sshd, "-t", "-f", str(config)], check=True, capture_output=True)
    command = [sshd, "-D", "-e", "-f", str(config)]
    if netns:
        inner = f"hostname {hostname} && exec {' '.join(command)}" if hostname else f"exec {' '.join(command)}"
        command = ["ip", "netns", "exec", netns, "unshare", "--uts", "sh", "-c", inner]
    log = folder / "sshd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = SSHServer(host, port, process, log)
    try:
        deadline = time.monotonic() + 10
        while "Server listening" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {log.read_text(errors='replace')[-1000:]}")
            time.sleep(0.02)  # sshd gives no other readiness signal than its log line
        keys.trust(host, port)
        yield server
    finally:
        server.stop()


NETNS_PREFIX = "gpt"


def can_make_namespaces() -> str | None:
    """None if network namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "needs iproute2 (ip) and util-linux (unshare)"
    probe = subprocess.run(["ip", "netns", "add", f"{NETNS_PREFIX}-probe"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", f"{NETNS_PREFIX}-probe"], capture_output=True)
    return None


def end_namespace(name: str) -> None:
    """Kill what still runs in network namespace ``name``, then delete it. The sshd listener is stopped by its pid, but
    its per-connection children outlive it when the peer can no longer be reached (a test that cut the link): they
    would hold the namespace alive, unseen, after ``ip netns del``."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


@contextlib.contextmanager
def namespace_hosts(
    count: int, prefix: str = NETNS_PREFIX, subnet: str = "10.250.0"
) -> Iterator[list[tuple[str, str]]]:
    """``count`` hosts ``(netns name, address)`` on a bridge in a "switch" namespace; this machine is ``subnet.1``.

    The bridge lives in its own namespace so the root namespace's firewall (Docker sets FORWARD to DROP) is untouched.
    Nothing has a default route, so no traffic can leave these hosts for anywhere but this machine and each other.
    """

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    switch, root_link = f"{prefix}-sw", f"{prefix}-root"
    hosts = [(f"{prefix}-h{i + 1}", f"{subnet}.{11 + i}") for i in range(count)]
    cleanup = [lambda: subprocess.run(["ip", "link", "del", root_link], capture_output=True)]
    cleanup += [lambda n=name: end_namespace(n) for name, _ in hosts]
    cleanup += [lambda: subprocess.run(["ip", "netns", "del", switch], capture_output=True)]
    for step in cleanup:  # leftovers of an interrupted run
        step()
    try:
        ip("netns", "add", switch)
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        ip("link", "add", root_link, "type", "veth", "peer", "name", "root", "netns", switch)
        ip("-n", switch, "link", "set", "root", "master", "br0", "up")
        ip("addr", "add", f"{subnet}.1/24", "dev", root_link)
        ip("link", "set", root_link, "up")
        for index, (name, address) in enumerate(hosts):
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
            ip("-n", switch, "link", "add", f"h{index}", "type", "veth", "peer", "name", "eth0", "netns", name)
            ip("-n", switch, "link", "set", f"h{index}", "master", "br0", "up")
            ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
        yield hosts
    finally:
        for step in cleanup:
            step()
