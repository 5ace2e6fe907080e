"""Kernels in Docker containers, side by side in one run: the older gateway_provisioners 0.5.0 DockerProvisioner
against this library's docker-provisioner, both on host networking, measured by the same benchmarks/driver.py.

Run (as root, with a Docker engine; the first run builds what is missing, later runs reuse it):

    python benchmarks/docker_old_package.py [--runs 10] [--concurrency 16] [--image gp-test-kernel:suite]

What it prepares, all without a registry:

* the older package's kernel image ``gp-anchor-kernel:0.5.0`` (anchor-trial.md section 5), built with the legacy
  builder FROM the project's base image (scripts/build-test-image.sh), from wheels downloaded on this host for the
  image's Python and installed with --no-index: gateway_provisioners 0.5.0 + ipykernel in a venv on PATH,
  ``jupyter image-bootstrap install``, user 1000:100, ``CMD ["bootstrap-kernel.sh"]``;
* the older package's venv .bench/gp050 (shared with ssh_startup.py) plus the ``docker`` SDK;
* its kernel spec, written by its own ``jupyter-docker-spec install`` (argv[0] pointed at that venv's python, since the
  spec starts with a bare "python", anchor-trial F6), and ours as the Docker tests write it (image
  ``gp-test-kernel:suite``, network host, pull policy never);
* the older package's host-network workaround (anchor-trial B13: it hands the client an empty IP), imported by the
  driver through GP_BENCH_PRELOAD, with GP_DOCKER_NETWORK=host and DOCKER_NETWORK=host (B12) and
  GP_RESPONSE_IP=127.0.0.1.

Each competitor runs the driver in a process of its own (its own RSS and event loop), in the order old, ours, ours,
old with half the runs each time, so drift of this shared machine hits both alike. The floor (``docker run`` of our
image starting ipykernel directly, until kernel_info answers; from docker_startup.py) is measured in this process
before and after. Nothing leaves this machine; every container started here is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from _competitors import burst_figures, merge_parts, old_package_python, run_driver  # noqa: E402
from _measure import summary  # noqa: E402

OLD_IMAGE = "gp-anchor-kernel:0.5.0"
OLD_BUILD = REPO / ".bench" / "gp050-image"
OLD_PACKAGES = ["gateway_provisioners==0.5.0", "ipykernel", "jupyter_client"]
RUN = uuid.uuid4().hex[:6]
OLD_USER = f"gpbench{RUN}"  # the older package names its containers <KERNEL_USERNAME>-<kernel id>
OURS_OWNER = f"gp-bench-{RUN}"
ARGV = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]

# anchor-trial.md section 6 (B13): on host networking the container has no IP, so the older package hands the client
# "" as the kernel's address; the kernel listens on the host, so 127.0.0.1 is right.
HOSTNET_PATCH = """
from gateway_provisioners import docker_swarm
_orig = docker_swarm.DockerProvisioner.get_container_status
def get_container_status(self, iteration):
    status = _orig(self, iteration)
    if self.assigned_host and not self.assigned_ip:
        self.assigned_ip = "127.0.0.1"
    return status
docker_swarm.DockerProvisioner.get_container_status = get_container_status
"""

DOCKERFILE = """FROM {base}
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/gp \\
 && /opt/gp/bin/pip install -q --no-index --find-links /tmp/wheels {packages} \\
 && /opt/gp/bin/jupyter image-bootstrap install --languages Python \\
 && useradd -m -u 1000 -g 100 jovyan \\
 && chown jovyan:users /usr/local/bin/bootstrap-kernel.sh && chmod 0755 /usr/local/bin/bootstrap-kernel.sh \\
 && chown -R jovyan:users /usr/local/bin/kernel-launchers && rm -rf /tmp/wheels /root/.cache
ENV PATH=/opt/gp/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin KERNEL_LANGUAGE=Python
USER 1000
CMD ["bootstrap-kernel.sh"]
"""


def log(message: str) -> None:
    print(f"== {message}", file=sys.stderr, flush=True)


def host_pip_env() -> dict[str, str]:
    """This host's pip settings minus its local wheel folder: the wheels are for the image's Python, from the index."""
    return {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}


def ensure_old_image() -> None:
    if subprocess.run(["docker", "image", "inspect", OLD_IMAGE], capture_output=True).returncode == 0:
        return
    built = subprocess.run(["sh", str(REPO / "scripts" / "build-test-image.sh")], capture_output=True, text=True)
    if built.returncode != 0:
        sys.exit(f"cannot build the base image: {built.stderr.strip()[-500:]}")
    base = dict(line.split("=", 1) for line in built.stdout.splitlines() if "=" in line)["BASE_IMAGE"]
    log(f"building {OLD_IMAGE} FROM {base}")
    wheels = OLD_BUILD / "wheels"
    shutil.rmtree(OLD_BUILD, ignore_errors=True)
    wheels.mkdir(parents=True)
    # Binary wheels for the image's Python (bookworm's 3.11), fetched by this host's pip: the build has no index.
    platforms = [f"--platform={p}" for p in ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64",
                                             "manylinux_2_34_x86_64", "any")]  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels), "--only-binary=:all:",
         "--python-version=3.11", "--implementation=cp", *platforms, *OLD_PACKAGES],
        check=True, env=host_pip_env(),
    )  # fmt: skip
    packages = " ".join(f'"{p}"' for p in OLD_PACKAGES)
    (OLD_BUILD / "Dockerfile").write_text(DOCKERFILE.format(base=base, packages=packages))
    subprocess.run(
        ["docker", "build", "-q", "-t", OLD_IMAGE, str(OLD_BUILD)],
        check=True, env={**os.environ, "DOCKER_BUILDKIT": "0"}, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def write_old_spec(python: Path, prefix: Path) -> None:
    subprocess.run(
        [str(python.with_name("jupyter-docker-spec")), "install", "--prefix", str(prefix), "--kernel-name", "old",
         "--image-name", OLD_IMAGE],
        check=True, capture_output=True,
    )  # fmt: skip
    spec_file = prefix / "share" / "jupyter" / "kernels" / "old" / "kernel.json"
    spec = json.loads(spec_file.read_text())
    spec["argv"][0] = str(python)  # a bare "python" would be whatever is first on PATH (anchor-trial F6)
    spec_file.write_text(json.dumps(spec))


def write_our_spec(root: Path, image: str) -> None:
    folder = root / "kernels" / "ours"
    folder.mkdir(parents=True)
    config = {"image_name": image, "network": "host", "image_pull_policy": "never", "owner": OURS_OWNER}
    provisioner = {"provisioner_name": "docker-provisioner", "config": config}
    spec = {"argv": ARGV, "display_name": "ours", "language": "python", "interrupt_mode": "signal",
            "metadata": {"kernel_provisioner": provisioner}}  # fmt: skip
    (folder / "kernel.json").write_text(json.dumps(spec))


def floor(image: str, runs: int) -> list[float]:
    """``docker run`` of the image starting ipykernel directly, until kernel_info answers (docker_startup.py)."""
    import docker

    from docker_startup import floor_once

    async def measure() -> list[float]:
        client = docker.from_env()
        with tempfile.TemporaryDirectory(prefix="gp-floor-") as work:
            await floor_once(client, image, Path(work))  # warm-up
            return [await floor_once(client, image, Path(work)) for _ in range(runs)]

    return asyncio.run(measure())


def remove_containers() -> int:
    """Every container this run started: ours carry the owner label, the older package's are named after OLD_USER."""
    import docker

    client = docker.from_env()
    found = client.containers.list(
        all=True, ignore_removed=True, filters={"label": f"org.jupyter.gp.owner={OURS_OWNER}"}
    )
    theirs = client.containers.list(all=True, ignore_removed=True, filters={"label": "app=gateway-provisioners"})
    found += [c for c in theirs if c.name.startswith(f"{OLD_USER}-")]
    for container in {c.id: c for c in found}.values():
        container.remove(force=True)
    return len({c.id for c in found})


def report(results: dict[str, dict[str, Any]], floor_times: list[float], args: argparse.Namespace) -> str:
    med = statistics.median
    base = med(floor_times)
    n = args.concurrency
    rows = [
        f"Machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, Docker engine "
        f"{docker_version()}, host networking. {args.runs} sequential runs each (start-up, restart, shutdown), {n} "
        "concurrent starts twice; seconds, min / **median** / max.",
        "",
        f"| kernel | start-up to kernel_info | vs floor (median) | restart to kernel_info | shutdown returns | {n} "
        f"concurrent: all ready (s) | failures | longest event-loop stall | RSS with {n} kernels |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| floor: `docker run` of {args.image} starting ipykernel | {summary(floor_times)} | — | — | — | — | — | — "
        "| — |",
    ]
    for label, data in results.items():
        walls, failures, stall, rss = burst_figures(data)
        rows.append(
            f"| {label} | {summary(data['startup'])} | +{(med(data['startup']) - base) * 1000:.0f} ms | "
            f"{summary(data['restart'])} | {summary(data['shutdown'])} | "
            f"{' / '.join(f'{w:.2f}' for w in walls)} | {failures} of {len(walls) * n} | {stall * 1000:.0f} ms | "
            f"{rss:.1f} MiB |"
        )
    for label, data in results.items():
        for c in data["concurrent"]:
            rows += [f"\n{label}, concurrent failure: {failure}" for failure in c["failures"]]
    return "\n".join(rows)


def docker_version() -> str:
    out = subprocess.run(["docker", "version", "-f", "{{.Server.Version}}"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--image", default="gp-test-kernel:suite", help="our kernel image (the Docker tests build it)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()
    ensure_old_image()
    old_python = old_package_python("docker")
    try:
        with tempfile.TemporaryDirectory(prefix="gp-docker-old-bench-") as tmp_name:
            tmp = Path(tmp_name)
            write_old_spec(old_python, tmp / "old")
            write_our_spec(tmp / "ours", args.image)
            patch = tmp / "gp_hostnet_patch.py"
            patch.write_text(HOSTNET_PATCH)
            (tmp / "home").mkdir()
            # Only what each needs: the older launcher copies its whole environment into every container (B14).
            base_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(tmp / "home")}
            competitors: dict[str, tuple[Path, str, dict[str, str]]] = {
                "gateway_provisioners 0.5.0 DockerProvisioner (+ B13 patch)": (old_python, "old", {
                    **base_env, "JUPYTER_PATH": str(tmp / "old" / "share" / "jupyter"), "KERNEL_USERNAME": OLD_USER,
                    "GP_DOCKER_NETWORK": "host", "DOCKER_NETWORK": "host", "GP_RESPONSE_IP": "127.0.0.1",
                    "GP_BENCH_PRELOAD": str(patch),
                }),
                "this docker-provisioner": (Path(sys.executable), "ours", {
                    **base_env, "JUPYTER_PATH": str(tmp / "ours"), "KERNEL_USERNAME": "bench",
                }),
            }  # fmt: skip
            floor_times = floor(args.image, args.runs - args.runs // 2)
            order = list(competitors) + list(reversed(competitors))
            parts: dict[str, list[dict[str, Any]]] = {label: [] for label in competitors}
            for index, label in enumerate(order):
                python, spec_name, env = competitors[label]
                half = args.runs // 2 if index < len(competitors) else args.runs - args.runs // 2
                parts[label].append(run_driver(python, spec_name, env, half, 0, args.concurrency))
            floor_times += floor(args.image, args.runs // 2)
            results = {label: merge_parts(chunks) for label, chunks in parts.items()}
    finally:
        left = remove_containers()
        if left:
            log(f"removed {left} container(s) left behind by the run")
    if args.json:
        args.json.write_text(json.dumps({"floor": floor_times, **results}, indent=2))
    print(report(results, floor_times, args))


if __name__ == "__main__":
    main()
