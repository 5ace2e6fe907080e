"""The Helm chart's Jupyter Server image, built the way deploy/server-image/Dockerfile says, without any registry.

The base is the tests' locally built Debian image (scripts/build-test-image.sh); this library's wheel and its
dependencies' wheels (downloaded on this host for the image's Python) go into the build's ``wheels/`` folder, so the
image installs from them alone. Built again only when the Dockerfile or a wheel changes (a label holds their hash).
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "server-image" / "Dockerfile"
CACHE = Path("/var/tmp/gp-docker-test")
HASH_LABEL = "gp.test.server-inputs"
PYVER = "3.11"  # the base image's python3 (Debian bookworm)
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux_2_34_x86_64", "any")


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def _dependency_wheels(wheel: Path) -> Path:
    """Wheels of everything ``gateway_provisioners[k8s,server]`` needs, for the image's Python; cached by the
    wheel's declared requirements (its METADATA's Requires-Dist lines)."""
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        requires = sorted(line for line in zf.read(meta).decode().splitlines() if line.startswith("Requires-Dist:"))
    folder = CACHE / f"server-wheels-{hashlib.sha256(chr(10).join(requires).encode()).hexdigest()[:12]}"
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
        result = _run(
            [sys.executable, "-m", "pip", "download", "-q", "-d", str(folder), "--only-binary=:all:",
             "--python-version", PYVER, "--implementation", "cp", *platforms, f"{wheel}[k8s,server]"],
            timeout=900,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        for own in folder.glob("gateway_provisioners-*.whl"):
            own.unlink()  # this library's wheel comes fresh each build
        (folder / ".complete").touch()
    return folder


def build_server_image(tag: str, unavailable: Callable[[str], None]) -> float:
    """Build ``tag``; returns the seconds it took (0 when it was up to date). ``unavailable`` is called with the
    reason when the base cannot be built; a failing build of ours fails the test."""
    import docker

    base = _run(["sh", str(REPO / "scripts" / "build-test-image.sh")], timeout=900)
    if base.returncode != 0:
        unavailable(f"cannot build the test base image: {(base.stderr.strip().splitlines() or ['?'])[-1]}")
    base_image = dict(re.findall(r"^(BASE_IMAGE|WHEELS)=(.*)$", base.stdout, re.M))["BASE_IMAGE"]
    with tempfile.TemporaryDirectory(prefix="gp-server-image-") as tmp:
        built = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp, str(REPO)], timeout=600)
        assert built.returncode == 0, built.stderr[-3000:]
        wheel = next(Path(tmp).glob("gateway_provisioners-*.whl"))
        deps = _dependency_wheels(wheel)
        wheels = sorted([*deps.glob("*.whl"), wheel], key=lambda p: p.name)
        digest = hashlib.sha256(DOCKERFILE.read_bytes() + base_image.encode())
        for path in wheels:
            digest.update(path.name.encode() + hashlib.sha256(path.read_bytes()).digest())
        inputs = digest.hexdigest()[:16]
        client = docker.from_env(timeout=900)
        try:
            if (client.images.get(tag).labels or {}).get(HASH_LABEL) == inputs:
                return 0.0
        except docker.errors.ImageNotFound:
            pass
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            tar.add(DOCKERFILE, arcname="Dockerfile")
            for path in wheels:
                tar.add(path, arcname=f"wheels/{path.name}")
        context.seek(0)
        version = wheel.name.split("-")[1]  # the checkout's version, whatever the Dockerfile's default pins
        args = {"BASE": base_image, "GP_REQUIREMENT": f"gateway_provisioners[k8s,server]=={version}"}
        started = time.monotonic()
        log: list[str] = []
        for chunk in client.api.build(
            fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True, pull=False, decode=True,
            buildargs=args, labels={HASH_LABEL: inputs},
        ):  # fmt: skip
            if "error" in chunk:
                raise AssertionError(f"building {tag} failed: {chunk['error']}\n" + "".join(log[-30:]))
            log.append(str(chunk.get("stream", "")))
        return time.monotonic() - started
