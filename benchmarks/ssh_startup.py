"""Kernels over SSH, side by side in one run: jupyter_client's local kernel, this library's DistributedProvisioner,
and the older gateway_provisioners 0.5.0 DistributedProvisioner, on the same real OpenSSH server.

Run (as root, with openssh-server installed; the older package is installed into .bench/gp050 on first use):

    python benchmarks/ssh_startup.py [--runs 10] [--gone-runs 2] [--concurrency 16] [--without-old]

Each competitor is measured by benchmarks/driver.py in a process of its own (so RSS and event-loop stalls are its
own), in the order A B C C B A with half the runs each time, so slow drift of this shared machine hits all alike.
The older package reaches 127.0.0.2 (it skips SSH for local addresses) on the same sshd port; ours reaches 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # for tests.support.sshd
from tests.support.sshd import SSHKeys, run_sshd  # noqa: E402

from _competitors import burst_figures, merge_parts, old_package_python, run_driver  # noqa: E402
from _measure import summary  # noqa: E402

ARGV = ["-m", "ipykernel_launcher", "-f", "{connection_file}"]


def write_spec(root: Path, name: str, argv: list[str], provisioner: str, config: dict[str, Any]) -> None:
    folder = root / "kernels" / name
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"argv": argv, "display_name": name, "language": "python", "interrupt_mode": "signal",
            "metadata": {"kernel_provisioner": {"provisioner_name": provisioner, "config": config}}}  # fmt: skip
    (folder / "kernel.json").write_text(json.dumps(spec))


def report(results: dict[str, dict[str, Any]], runs: int, concurrency: int) -> str:
    local = results["local"]
    med = statistics.median
    rows = [
        f"Machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"OpenSSH on loopback. {runs} sequential runs each (start-up, restart, shutdown), {concurrency} concurrent "
        "starts twice; seconds, min / **median** / max.",
        "",
        "| kernel | start-up to kernel_info | ratio | restart to kernel_info | shutdown returns | kernel process gone "
        f"after shutdown | {concurrency} concurrent: all ready (s) | failures | longest event-loop stall | RSS with "
        f"{concurrency} kernels |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, data in results.items():
        walls, failures, stall, rss = burst_figures(data)
        rows.append(
            f"| {label} | {summary(data['startup'])} | {med(data['startup']) / med(local['startup']):.2f}x | "
            f"{summary(data['restart'])} | {summary(data['shutdown'])} | {summary(data['gone'])} | "
            f"{med(walls):.2f} ({med(walls) / med([c['all_ready_s'] for c in local['concurrent']]):.2f}x) | "
            f"{failures} of {len(walls) * concurrency} | {stall * 1000:.0f} ms | {rss:.1f} MiB |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--gone-runs", type=int, default=2, help="runs that wait for the kernel process to end")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--without-old", action="store_true", help="skip gateway_provisioners 0.5.0")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gp-ssh-bench-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        keys = SSHKeys(tmp / "keys")
        ours_sshd = stack.enter_context(run_sshd(tmp / "sshd1", keys, "127.0.0.1"))
        ours_root, old_root = tmp / "jp", tmp / "jp-old"
        base_env = {"PATH": os.environ["PATH"], "KERNEL_USERNAME": "bench", "LANG": "C.UTF-8",
                    "HOME": os.environ.get("HOME", "/root")}  # fmt: skip
        if os.geteuid() == 0:  # the kernels run as this user (and the SSH user): as root, allow it explicitly
            base_env["GP_ALLOW_ROOT_KERNELS"] = "true"
        write_spec(ours_root, "local", [sys.executable, *ARGV], "local-provisioner", {})
        write_spec(ours_root, "ours", [sys.executable, *ARGV], "distributed-provisioner", {
            "remote_hosts": [ours_sshd.address], "known_hosts": str(keys.known_hosts),
            "client_keys": [str(keys.client_key)], "remote_user": getpass.getuser(), "remote_python": sys.executable,
        })  # fmt: skip
        competitors: dict[str, tuple[Path, str, dict[str, str]]] = {
            "local": (Path(sys.executable), "local", {**base_env, "JUPYTER_PATH": str(ours_root)}),
            "this DistributedProvisioner": (Path(sys.executable), "ours", {**base_env, "JUPYTER_PATH": str(ours_root)}),
        }
        if not args.without_old:
            old_python = old_package_python()
            stack.enter_context(run_sshd(tmp / "sshd2", keys, "127.0.0.2", port=ours_sshd.port))
            home = tmp / "home-old"
            (home / ".ssh").mkdir(parents=True)
            shutil.copy(keys.client_key, home / ".ssh" / "id_ed25519")  # paramiko reads ~/.ssh
            shutil.copy(keys.known_hosts, home / ".ssh" / "known_hosts")
            subprocess.run(
                [
                    str(old_python.with_name("jupyter-ssh-spec")),
                    "install",
                    "--prefix",
                    str(old_root),
                    "--kernel-name",
                    "old",
                    "--remote-hosts",
                    "127.0.0.2",
                ],
                check=True,
                capture_output=True,
            )
            spec_file = old_root / "share" / "jupyter" / "kernels" / "old" / "kernel.json"
            spec = json.loads(spec_file.read_text())
            spec["argv"][0] = str(old_python)  # its specs start with a bare "python" (anchor-trial F6)
            spec_file.write_text(json.dumps(spec))
            competitors["gateway_provisioners 0.5.0"] = (old_python, "old", {
                **base_env, "JUPYTER_PATH": str(old_root / "share" / "jupyter"), "HOME": str(home),
                "GP_SSH_PORT": str(ours_sshd.port), "GP_RESPONSE_IP": "127.0.0.1",
            })  # fmt: skip
        order = list(competitors) + list(reversed(competitors))
        parts: dict[str, list[dict[str, Any]]] = {label: [] for label in competitors}
        for index, label in enumerate(order):
            python, spec_name, env = competitors[label]
            half = args.runs // 2 if index < len(competitors) else args.runs - args.runs // 2
            gone = args.gone_runs if index < len(competitors) else 0
            parts[label].append(run_driver(python, spec_name, env, half, gone, args.concurrency))
        results = {label: merge_parts(chunks) for label, chunks in parts.items()}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(report(results, args.runs, args.concurrency))


if __name__ == "__main__":
    main()
