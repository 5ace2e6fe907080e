"""``jupyter-spark-images build``: the two images of Spark kernels on Kubernetes, built locally with Docker.

From any Debian-like base with Python 3.9+ (``apt-get`` and the Debian mirror reachable from the build):

- a **Spark base**: the base with a Java runtime (``--jre-package``, Debian's ``openjdk-17-jre-headless`` by default)
  and pyspark (from ``--pyspark-wheels DIR``, else the package index) installed for the image's ``python3``, plus a
  passwd entry for the kernel's uid (Spark's Hadoop login refuses a user without a name);
- the **kernel image**: the Spark base with the agent and ipykernel added by ``jupyter-image-bootstrap``'s build
  (the kernel's pod is the Spark driver, in client mode), and a driver entry script for Spark's cluster mode (the
  Spark operator's ``SparkApplication``): Spark's Kubernetes client starts the driver's container with the arguments
  ``driver --properties-file … --class … FILE ARGS`` and leaves the container's command to the pod template, so a
  template whose command is ``gp-spark-driver`` gets them; it runs ``spark-submit --deploy-mode client`` on them
  bound to the pod's address, as Spark's own image does, as the image's (non-root) user;
- the **executor image**: the Spark base with an entry script that starts the executor the way Spark's Kubernetes
  scheduler asks for it: the container's argument is ``executor`` and the environment describes the executor
  (``SPARK_DRIVER_URL``, ``SPARK_EXECUTOR_ID``, ``SPARK_EXECUTOR_CORES``, ``SPARK_EXECUTOR_MEMORY``,
  ``SPARK_APPLICATION_ID``, ``SPARK_EXECUTOR_POD_IP``, ``SPARK_EXECUTOR_POD_NAME``, ``SPARK_RESOURCE_PROFILE_ID``,
  the JVM options as ``SPARK_JAVA_OPT_0`` …, ``SPARK_CLASSPATH``); it runs
  ``org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend`` on pyspark's jars, as a non-root user.

Each image carries a label with the hash of its inputs; a build whose inputs did not change is skipped.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .image_bootstrap import build_image as build_kernel_image
from .image_bootstrap import docker_engine, up_to_date

HASH_LABEL = "org.jupyter.gp.spark"
DEFAULT_JRE = "openjdk-17-jre-headless"
EXECUTOR_ENTRY = "/usr/local/bin/gp-spark-executor"
DRIVER_ENTRY = "/usr/local/bin/gp-spark-driver"

# Installs the JRE from the base's apt sources, and pyspark for the image's python3 into its first site directory
# (so that a kernel venv made with --system-site-packages sees it too), through a throw-away venv's pip: a Debian
# python3 has no pip of its own and refuses system-wide installs.
SPARK_BASE_SCRIPT = """#!/bin/sh
set -eu
JRE=$1 UID_=$2 GID_=$3
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# The JRE's postinst registers its man pages with update-alternatives: the folder must exist (slim bases drop it).
mkdir -p /usr/share/man/man1
apt-get install -y -qq --no-install-recommends "$JRE"
rm -rf /var/lib/apt/lists/* /var/cache/apt/*
java -version
SITE=$(python3 -c 'import site; print(site.getsitepackages()[0])')
python3 -m venv /tmp/gp-pip
if [ -n "$(ls -A /tmp/gp-pyspark 2>/dev/null)" ]; then
    /tmp/gp-pip/bin/pip install -q --no-cache-dir --no-index --find-links /tmp/gp-pyspark --target "$SITE" pyspark
else
    /tmp/gp-pip/bin/pip install -q --no-cache-dir --target "$SITE" pyspark
fi
rm -rf /tmp/gp-pip /tmp/gp-pyspark
python3 -c 'import pyspark; print("pyspark", pyspark.__version__)'
getent group "$GID_" >/dev/null || groupadd --gid "$GID_" spark
getent passwd "$UID_" >/dev/null || useradd --uid "$UID_" --gid "$GID_" --no-create-home --home-dir /home/kernel spark
mkdir -p /home/kernel /opt/spark/work-dir && chmod 1777 /home/kernel /opt/spark/work-dir
"""

# The executor container's entry script (the contract is Spark's: see the module's docstring).
EXECUTOR_ENTRY_TEXT = """#!/bin/bash
# gateway-provisioners: a Spark executor started by Spark's Kubernetes scheduler (argument "executor").
set -eu
if [ "${1:-}" != executor ]; then exec "$@"; fi
SPARK_HOME=${SPARK_HOME:-$(python3 -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}
opts=()
i=0
while var="SPARK_JAVA_OPT_$i" && [ -n "${!var+set}" ]; do opts+=("${!var}"); i=$((i + 1)); done
classpath="${SPARK_CLASSPATH:+$SPARK_CLASSPATH:}$SPARK_HOME/jars/*${SPARK_DIST_CLASSPATH:+:$SPARK_DIST_CLASSPATH}"
exec "${JAVA_HOME:+$JAVA_HOME/bin/}java" "${opts[@]}" \\
    -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" -cp "$classpath" \\
    org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \\
    --driver-url "$SPARK_DRIVER_URL" --executor-id "$SPARK_EXECUTOR_ID" --cores "$SPARK_EXECUTOR_CORES" \\
    --app-id "$SPARK_APPLICATION_ID" --hostname "$SPARK_EXECUTOR_POD_IP" \\
    --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" --podName "$SPARK_EXECUTOR_POD_NAME"
"""

# The driver container's command in cluster mode (the contract is Spark's: see the module's docstring). Spark sets
# SPARK_DRIVER_BIND_ADDRESS to the pod's IP (a field reference) and mounts the properties file it names.
DRIVER_ENTRY_TEXT = """#!/bin/bash
# gateway-provisioners: a Spark driver in cluster mode (arguments: driver --properties-file FILE --class ... ARGS).
set -eu
if [ "${1:-}" != driver ]; then exec "$@"; fi
shift
SPARK_HOME=${SPARK_HOME:-$(python3 -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}
exec "$SPARK_HOME/bin/spark-submit" --conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS" \\
    --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=$SPARK_DRIVER_BIND_ADDRESS" --deploy-mode client "$@"
"""


def spark_base_dockerfile(base: str, jre: str, uid: int, gid: int, label: str) -> str:
    return (
        f"FROM {base}\nUSER root\nCOPY pyspark/ /tmp/gp-pyspark/\nCOPY spark-base.sh /tmp/spark-base.sh\n"
        f"RUN sh /tmp/spark-base.sh {jre} {uid} {gid} && rm /tmp/spark-base.sh\n"
        f'LABEL {HASH_LABEL}="{label}"\n'
    )


def executor_dockerfile(spark_base: str, uid: int, gid: int, label: str) -> str:
    return (
        f"FROM {spark_base}\nUSER root\nCOPY gp-spark-executor {EXECUTOR_ENTRY}\nRUN chmod 755 {EXECUTOR_ENTRY}\n"
        f"WORKDIR /opt/spark/work-dir\nENV HOME=/home/kernel\nUSER {uid}:{gid}\n"
        f'LABEL {HASH_LABEL}="{label}"\nENTRYPOINT ["{EXECUTOR_ENTRY}"]\nCMD ["executor"]\n'
    )


def driver_base_dockerfile(spark_base: str, label: str) -> str:
    return (
        f"FROM {spark_base}\nUSER root\nCOPY gp-spark-driver {DRIVER_ENTRY}\nRUN chmod 755 {DRIVER_ENTRY}\n"
        f'LABEL {HASH_LABEL}="{label}"\n'
    )


def _wheels(folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    if not folder.is_dir():
        raise click.BadParameter(f"{folder} is not a folder", param_hint="--pyspark-wheels")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".whl", ".gz", ".zip"))


def _hash(*parts: str, files: list[Path] | None = None) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\0")
    for path in files or []:
        digest.update(f"{path.name}:{path.stat().st_size}\0".encode())
    return digest.hexdigest()[:16]


def _build(client: Any, tag: str, label: str, files: dict[str, bytes | Path], force: bool,
           echo: Callable[[str], None]) -> str:  # fmt: skip
    """Build ``tag`` from ``files`` (Dockerfile and the rest) unless an image with label ``label`` exists."""
    if not force and (existing_id := up_to_date(client, tag, label, echo, key=HASH_LABEL)):
        return existing_id
    echo(f"building {tag}")
    # The context goes through a file: pyspark's wheel alone is about 450 MB.
    with tempfile.TemporaryFile() as context:
        with tarfile.open(fileobj=context, mode="w") as tar:
            for name, content in files.items():
                if isinstance(content, Path):
                    tar.add(str(content), arcname=name)
                else:
                    info = tarfile.TarInfo(name)
                    info.size, info.mode = len(content), 0o755
                    tar.addfile(info, io.BytesIO(content))
        context.seek(0)
        for chunk in client.api.build(
            fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True, pull=False, decode=True
        ):
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                raise click.ClickException(f"building {tag} failed: {detail.strip()}")
            text = str(chunk.get("stream", "")).rstrip()
            if text:
                echo(text)
    image = client.images.get(tag)
    echo(f"built {tag} ({image.short_id})")
    return str(image.id)


def build_spark_images(
    client: Any,
    base: str,
    kernel_tag: str,
    executor_tag: str,
    *,
    pyspark_wheels: Path | None = None,
    wheels: Path | None = None,
    jre: str = DEFAULT_JRE,
    uid: int = 1000,
    gid: int = 100,
    force: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, str]:
    """Build the Spark base, the kernel image and the executor image; returns their tags → ids."""
    import docker.errors

    if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", jre):
        raise click.BadParameter(f"{jre!r} is not a Debian package name", param_hint="--jre-package")
    try:
        base_id = client.images.get(base).id
    except docker.errors.ImageNotFound:
        raise click.ClickException(f"base image {base!r} is not on this Docker engine: pull or build it") from None
    pyspark = _wheels(pyspark_wheels)
    label = _hash("spark-base v1", base_id, jre, str(uid), str(gid), SPARK_BASE_SCRIPT, files=pyspark)
    spark_base = f"{executor_tag.rsplit(':', 1)[0]}-base:{label}"
    files: dict[str, bytes | Path] = {
        "Dockerfile": spark_base_dockerfile(base, jre, uid, gid, label).encode(),
        "spark-base.sh": SPARK_BASE_SCRIPT.encode(),
        "pyspark/.keep": b"",
    }
    files.update({f"pyspark/{path.name}": path for path in pyspark})
    base_image_id = _build(client, spark_base, label, files, force, echo)
    executor_label = _hash("executor v1", base_image_id, EXECUTOR_ENTRY_TEXT, str(uid), str(gid))
    executor_id = _build(client, executor_tag, executor_label, {
        "Dockerfile": executor_dockerfile(spark_base, uid, gid, executor_label).encode(),
        "gp-spark-executor": EXECUTOR_ENTRY_TEXT.encode(),
    }, force, echo)  # fmt: skip
    # The kernel image's own base: the Spark base and the driver entry (a small layer: the Spark base stays shared).
    driver_label = _hash("driver v1", base_image_id, DRIVER_ENTRY_TEXT)
    driver_base = f"{kernel_tag.rsplit(':', 1)[0]}-base:{driver_label}"
    driver_base_id = _build(client, driver_base, driver_label, {
        "Dockerfile": driver_base_dockerfile(spark_base, driver_label).encode(),
        "gp-spark-driver": DRIVER_ENTRY_TEXT.encode(),
    }, force, echo)  # fmt: skip
    kernel_id = build_kernel_image(client, driver_base, kernel_tag, wheels=wheels, force=force, echo=echo)
    return {spark_base: base_image_id, driver_base: driver_base_id, kernel_tag: kernel_id, executor_tag: executor_id}


@click.group()
def main() -> None:
    """Images for Spark kernels on Kubernetes (a kernel image that is the driver, and an executor image)."""


@main.command()
@click.option("--base", required=True, help="Debian-like base image with Python 3.9+ (on the engine already).")
@click.option("--kernel-tag", required=True, help="Tag of the kernel (driver) image.")
@click.option("--executor-tag", required=True, help="Tag of the executor image.")
@click.option("--pyspark-wheels", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder holding pyspark's and py4j's wheels (default: install from the package index).")  # fmt: skip
@click.option("--wheels", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Wheels for the kernel image (ipykernel, cryptography), as in jupyter-image-bootstrap.")  # fmt: skip
@click.option("--jre-package", default=DEFAULT_JRE, show_default=True, help="The Java runtime's apt package.")
@click.option("--uid", type=click.IntRange(1), default=1000, show_default=True, help="The kernel's and executors' uid.")
@click.option("--gid", type=click.IntRange(1), default=100, show_default=True, help="Their group id.")
@click.option("--force", is_flag=True, help="Build even when images with the same inputs exist.")
def build(base: str, kernel_tag: str, executor_tag: str, pyspark_wheels: Path | None, wheels: Path | None,
          jre_package: str, uid: int, gid: int, force: bool) -> None:  # fmt: skip
    """Build the Spark kernel image and the executor image from BASE (Docker SDK; DOCKER_HOST is honoured)."""
    client = docker_engine()
    images = build_spark_images(
        client, base, kernel_tag, executor_tag, pyspark_wheels=pyspark_wheels, wheels=wheels, jre=jre_package,
        uid=uid, gid=gid, force=force, echo=click.echo,
    )  # fmt: skip
    click.echo(json.dumps(images))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
