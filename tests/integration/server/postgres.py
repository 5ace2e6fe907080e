"""A real PostgreSQL server for the store tests: Debian's binaries, a throw-away cluster, loopback only.

initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user Debian's package creates. The
server listens on 127.0.0.1 on a free port with ``trust`` authentication (nothing else can reach it) and is stopped,
and its folder removed, at the end.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def find_pg_bin() -> Path | None:
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1:]), None)
    return Path(found).resolve().parent if found else None


def cannot_run() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None."""
    if find_pg_bin() is None:
        return "PostgreSQL is not installed (Debian: apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install '.[server-postgres]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to own the cluster"
    return None


@contextlib.contextmanager
def run_postgres(timeout: float = 60) -> Iterator[str]:
    """Start a cluster; yields its URL (``postgresql://gp@127.0.0.1:<port>/postgres``)."""
    import psycopg

    bin_dir = find_pg_bin()
    assert bin_dir is not None
    folder = Path(tempfile.mkdtemp(prefix="gp-postgres-"))
    owner: dict[str, Any] = {}
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        owner = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    data = folder / "data"
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "--username=gp", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True, **owner,
    )  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with open(folder / "log", "wb") as log:
        proc = subprocess.Popen(
            [str(bin_dir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(folder),
             "-c", "fsync=off", "-c", "logging_collector=off"],
            stdout=subprocess.DEVNULL, stderr=log, **owner,
        )  # fmt: skip
    url = f"postgresql://gp@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"PostgreSQL did not start: {(folder / 'log').read_text()[-2000:]}") from None
                time.sleep(0.1)  # polling the server's readiness, bounded by the deadline
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)
