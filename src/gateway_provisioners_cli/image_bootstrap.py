"""``jupyter-image-bootstrap``: put the kernel-side agent into a kernel image.

``install --dir D`` writes the agent, its entry script and the install scripts into ``D`` for a Dockerfile to
``COPY``, and prints the lines to add. ``build --base IMAGE --tag TAG --language python|r|scala [--spark]`` builds a
kernel image from any base that has Python 3.9+, with the Docker SDK: it adds the agent and installs what the
language's recipe (:data:`RECIPES`) needs and the base lacks — ipykernel; for R a check that the base has IRkernel;
for Scala pyspark 3.5 and Apache Toree (the base has a JRE); with ``--spark`` pyspark — plus the agent's one
dependency, ``cryptography``, from ``--wheels DIR`` when the build cannot reach a package index. A build whose inputs
(base image id, agent, wheels, recipe) did not change is skipped: the image carries a label with their hash. Other
kinds of image (a Spark executor image, say) are built by passing a :class:`Recipe` to :func:`build_image`.
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import click

from gateway_provisioners.agent import agent_path

from .spark import IMAGE_SPARK_HOME, IMAGE_TOREE_JAR

AGENT_HOME = "/usr/local/share/gateway-provisioners"
ENTRY_SCRIPT = "gp-agent"
KERNEL_VENV = "/opt/gp-kernel"
HASH_LABEL = "org.jupyter.gp.bootstrap"
KERNEL_UID = 1000  # the Docker and Kubernetes provisioners' default kernel uid (GP_DOCKER_UID, GP_KERNEL_UID)

# The entry script the image's ENTRYPOINT runs: the agent under the image's Python, with the container's arguments
# (the Docker and Swarm provisioners pass `--params FILE`: the launch parameters are a private file, never in the
# container's environment or command). It prefers the kernel venv made by `build`.
ENTRY_SCRIPT_TEXT = f"""#!/bin/sh
# gateway-provisioners agent: starts the kernel and connects it to the server (arguments: --params FILE).
if [ -n "$GP_AGENT_PYTHON" ]; then PY=$GP_AGENT_PYTHON
elif [ -x {KERNEL_VENV}/bin/python3 ]; then PY={KERNEL_VENV}/bin/python3
else PY=python3; fi
exec "$PY" {AGENT_HOME}/gp_agent.py "$@"
"""


@dataclass(frozen=True)
class Recipe:
    """What a kernel image of one kind needs besides the agent: the build installs ``packages`` into the kernel venv
    unless ``check`` already imports, after ``base_check`` (shell) found what pip cannot install in the base.

    ``spark`` images also get ``SPARK_HOME`` (a link to pyspark's own Spark, which has the jars) and, for Scala, the
    Toree jar at the fixed paths the spec commands write (``gateway_provisioners_cli.spark``). A new kind of image
    (an executor image, say) is one more :class:`Recipe` passed to :func:`build_image`.
    """

    name: str
    packages: tuple[str, ...]
    check: str
    base_check: str = ""
    spark: bool = False
    toree: bool = False


_JAVA_CHECK = (
    'command -v java >/dev/null || { echo "gp-bootstrap: $LANGUAGE images need a base with Java (a JRE)" >&2; exit 1; }'
)
_R_CHECK = (
    "command -v R >/dev/null && R --slave -e 'quit(status = !requireNamespace(\"IRkernel\", quietly = TRUE))' || {"
    ' echo "gp-bootstrap: --language r needs a base image with R and IRkernel (Debian: r-cran-irkernel)" >&2; exit 1; }'
)
#: The images ``build --language`` makes; ``python-spark`` is ``--language python --spark``. Toree 0.5 is built for
#: Scala 2.12, which Spark 3.5 is the last to use: the Scala image pins pyspark below 4.
RECIPES: dict[str, Recipe] = {
    "python": Recipe("python", ("ipykernel", "cryptography"), "import ipykernel, cryptography"),
    "python-spark": Recipe("python-spark", ("ipykernel", "cryptography", "pyspark"),
                           "import ipykernel, cryptography, pyspark", _JAVA_CHECK, spark=True),
    "r": Recipe("r", ("cryptography",), "import cryptography", _R_CHECK),
    "scala": Recipe("scala", ("cryptography", "pyspark>=3.5,<4", "toree"), "import cryptography, pyspark, toree",
                    _JAVA_CHECK, spark=True, toree=True),
}  # fmt: skip


def recipe_for(language: str, spark: bool = False) -> Recipe:
    """The recipe of ``build --language LANGUAGE [--spark]``; a one-line error for a combination there is none of."""
    name = f"{language}-spark" if spark and language != "scala" else language
    if name not in RECIPES:
        raise click.UsageError(
            f"no image recipe for --language {language}{' --spark' if spark else ''}: "
            f"choose one of {', '.join(RECIPES)} (python-spark is --language python --spark)"
        )
    return RECIPES[name]


def install_script(recipe: Recipe) -> str:
    """The shell script the build runs as root for ``recipe``: checks the base, installs only what is missing (from
    the wheel folder when one was given), links Spark and Toree to their fixed paths."""
    lines = [
        "#!/bin/sh",
        "set -eu",
        f"LANGUAGE={recipe.name}",
        "WHEELS=/tmp/gp-wheels",
        "PY=$(command -v python3 || command -v python || true)",
        '[ -n "$PY" ] || { echo "gp-bootstrap: the base image has no python3 (the agent needs 3.9+)" >&2; exit 1; }',
        "\"$PY\" -c 'import sys; sys.exit(sys.version_info < (3, 9))' || "
        '{ echo "gp-bootstrap: Python 3.9+ needed" >&2; exit 1; }',
        recipe.base_check,
        f"NEED={shlex.quote(' '.join(recipe.packages))}",
        f'if "$PY" -c {shlex.quote(recipe.check)} 2>/dev/null; then',
        '    echo "gp-bootstrap: $PY already has $NEED"',
        "else",
        "    # A venv that still sees the base image's packages; pip comes from the base's ensurepip.",
        f'    "$PY" -m venv --system-site-packages {KERNEL_VENV}',
        '    if [ -n "$(ls -A $WHEELS 2>/dev/null)" ]; then',
        f"        {KERNEL_VENV}/bin/python3 -m pip install -q --no-cache-dir --no-index --find-links $WHEELS $NEED",
        "    else",
        f"        {KERNEL_VENV}/bin/python3 -m pip install -q --no-cache-dir $NEED",
        "    fi",
        f'    echo "gp-bootstrap: installed $NEED into {KERNEL_VENV}"',
        f"    PY={KERNEL_VENV}/bin/python3",
        "fi",
    ]
    if recipe.spark:
        lines += [
            "# Spark where the spec commands expect it: pyspark's own distribution (bin/, jars/).",
            "SPARK=$(\"$PY\" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')",
            f'mkdir -p {PurePosixPath(IMAGE_SPARK_HOME).parent} && ln -sfn "$SPARK" {IMAGE_SPARK_HOME}',
            "# Hadoop's login (in every Spark driver) needs a name for the kernel's uid: the default uid gets one.",
            f"getent passwd {KERNEL_UID} >/dev/null || "
            f"echo 'kernel:x:{KERNEL_UID}:{KERNEL_UID}:Jupyter kernel:/home/kernel:/usr/sbin/nologin' >>/etc/passwd",
            f"getent group {KERNEL_UID} >/dev/null || echo 'kernel:x:{KERNEL_UID}:' >>/etc/group",
        ]
    if recipe.toree:
        lines += [
            "TOREE=$(\"$PY\" -c 'import os, toree; print(os.path.dirname(toree.__file__))')",
            f"mkdir -p {PurePosixPath(IMAGE_TOREE_JAR).parent}",
            f'ln -sf "$(ls "$TOREE"/lib/toree-assembly-*.jar | head -n 1)" {IMAGE_TOREE_JAR}',
        ]
    lines += [
        "rm -rf $WHEELS",
        f"chmod 755 {AGENT_HOME}/{ENTRY_SCRIPT}",
        f"ln -sf {AGENT_HOME}/{ENTRY_SCRIPT} /usr/local/bin/{ENTRY_SCRIPT}",
        "# A home any kernel user (KERNEL_UID) can write to: IPython keeps its profile there.",
        "mkdir -p /home/kernel && chmod 1777 /home/kernel",
    ]
    return "\n".join(line for line in lines if line) + "\n"


# The script `install --dir` writes for hand-written Dockerfiles: `sh install-kernel.sh LANGUAGE` runs its recipe.
INSTALL_SCRIPT_TEXT = (
    "#!/bin/sh\n# Usage: install-kernel.sh python|python-spark|r|scala (as root, in a Dockerfile RUN)\n"
    'set -eu\nHERE=$(dirname "$0")\ncase "${1:-python}" in\n'
    + "".join(f'    {name}) exec sh "$HERE/install-{name}.sh" ;;\n' for name in RECIPES)
    + '    *) echo "install-kernel.sh: no recipe ${1:-}; one of: '
    + " ".join(RECIPES)
    + '" >&2; exit 2 ;;\nesac\n'
)


def write_agent_files(folder: Path) -> list[Path]:
    """Write the agent, its entry script and the install script into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "gp_agent.py": agent_path().read_text(),
        ENTRY_SCRIPT: ENTRY_SCRIPT_TEXT,
        "install-kernel.sh": INSTALL_SCRIPT_TEXT,
        **{f"install-{name}.sh": install_script(recipe) for name, recipe in RECIPES.items()},
    }
    written = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text)
        path.chmod(0o755)
        written.append(path)
    return written


# Java takes its home from the password database, not $HOME: a kernel user (KERNEL_UID) that the image does not list
# gets "?", and spark-submit fails ("basedir must be absolute: ?/.ivy2/local"). The kernel home every image has.
SPARK_IMAGE_ENV = f" SPARK_HOME={IMAGE_SPARK_HOME} JAVA_TOOL_OPTIONS=-Duser.home=/home/kernel"


def dockerfile(base: str, recipe: Recipe, has_wheels: bool, label_hash: str) -> str:
    spark_env = SPARK_IMAGE_ENV if recipe.spark else ""
    lines = [
        f"FROM {base}",
        "USER root",
        f"COPY gp/ {AGENT_HOME}/",
        "COPY wheels/ /tmp/gp-wheels/" if has_wheels else "",
        f"RUN sh {AGENT_HOME}/install-{recipe.name}.sh",
        f"ENV PATH={KERNEL_VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/home/kernel"
        + spark_env,
        f'LABEL {HASH_LABEL}="{label_hash}" org.jupyter.gp.language="{recipe.name}"',
        f'ENTRYPOINT ["/usr/local/bin/{ENTRY_SCRIPT}"]',
        "CMD []",
    ]
    return "\n".join(line for line in lines if line) + "\n"


def _wheel_files(wheels: Path | None) -> list[Path]:
    if wheels is None:
        return []
    if not wheels.is_dir():
        raise click.BadParameter(f"{wheels} is not a folder", param_hint="--wheels")
    return sorted(p for p in wheels.iterdir() if p.is_file() and p.suffix in (".whl", ".gz", ".zip"))


def build_context(base: str, recipe: Recipe, wheels: Path | None, label_hash: str) -> bytes:
    """The build context as a tar: Dockerfile, gp/ (agent files), wheels/."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add_bytes(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        wheel_files = _wheel_files(wheels)
        add_bytes("Dockerfile", dockerfile(base, recipe, bool(wheel_files), label_hash).encode())
        add_bytes("gp/gp_agent.py", agent_path().read_bytes(), 0o755)
        add_bytes(f"gp/{ENTRY_SCRIPT}", ENTRY_SCRIPT_TEXT.encode(), 0o755)
        add_bytes(f"gp/install-{recipe.name}.sh", install_script(recipe).encode(), 0o755)
        for path in wheel_files:
            tar.add(str(path), arcname=f"wheels/{path.name}")
    return buffer.getvalue()


def inputs_hash(base_id: str, recipe: Recipe, wheels: Path | None) -> str:
    """What decides the image's content: a second build with the same inputs is skipped."""
    digest = hashlib.sha256()
    for part in (base_id, dockerfile("", recipe, False, ""), agent_path().read_text(), ENTRY_SCRIPT_TEXT,
                 install_script(recipe)):  # fmt: skip
        digest.update(part.encode() + b"\0")
    for path in _wheel_files(wheels):
        digest.update(f"{path.name}:{path.stat().st_size}\0".encode())
    return digest.hexdigest()[:16]


def build_image(
    client: Any,
    base: str,
    tag: str,
    *,
    wheels: Path | None = None,
    language: str = "python",
    force: bool = False,
    echo: Callable[[str], None] = print,
    spark: bool = False,
    recipe: Recipe | None = None,
) -> str:
    """Build ``tag`` from ``base`` with the agent added; returns the image id. Skips an up-to-date image.

    ``client`` is a ``docker.DockerClient``. The base must exist locally (it is never pulled here). The image's kind is
    ``recipe`` when given, else the one of ``language`` and ``spark`` (:func:`recipe_for`).
    """
    recipe = recipe or recipe_for(language, spark)
    import docker.errors

    try:
        base_image = client.images.get(base)
    except docker.errors.ImageNotFound:
        raise click.ClickException(
            f"base image {base!r} is not on this Docker engine: pull or build it first"
        ) from None
    label_hash = inputs_hash(base_image.id, recipe, wheels)
    if not force and (existing_id := up_to_date(client, tag, label_hash, echo)):
        return existing_id
    context = build_context(base, recipe, wheels, label_hash)
    echo(f"building {tag} from {base} ({recipe.name}, {len(_wheel_files(wheels))} wheels)")
    image_id = ""
    for chunk in client.api.build(
        fileobj=io.BytesIO(context), custom_context=True, tag=tag, rm=True, forcerm=True, pull=False, decode=True
    ):
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            raise click.ClickException(f"building {tag} failed: {detail.strip()}")
        text = str(chunk.get("stream", "")).rstrip()
        if text:
            echo(text)
        if "aux" in chunk and isinstance(chunk["aux"], dict):
            image_id = chunk["aux"].get("ID", image_id)
    image = client.images.get(tag)
    echo(f"built {tag} ({image.short_id})")
    return image_id or str(image.id)


@click.group()
def main() -> None:
    """Put the gateway-provisioners agent into a kernel image."""


@main.command()
@click.option(
    "--dir",
    "folder",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write gp_agent.py, gp-agent and install-kernel.sh into (your Dockerfile's context).",
)
def install(folder: Path) -> None:
    """Write the agent files into a folder and print the Dockerfile lines that use them."""
    for path in write_agent_files(folder):
        click.echo(f"wrote {path}")
    click.echo("\nAdd to your Dockerfile (as root; the base needs Python 3.9+ with ipykernel and cryptography):\n")
    click.echo(f"COPY {folder.name}/ {AGENT_HOME}/")
    click.echo(f"RUN sh {AGENT_HOME}/install-kernel.sh python   # or python-spark, r, scala; installs what is missing")
    click.echo(f'ENTRYPOINT ["/usr/local/bin/{ENTRY_SCRIPT}"]')
    click.echo("CMD []")


def up_to_date(client: Any, tag: str, label: str, echo: Callable[[str], None], key: str = HASH_LABEL) -> str | None:
    """The id of image ``tag`` when it was built from the same inputs (its label ``key`` is ``label``), else None."""
    import docker.errors

    try:
        existing = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    if (existing.labels or {}).get(key) != label:
        return None
    echo(f"{tag} is up to date ({existing.short_id}); nothing to build")
    return str(existing.id)


def docker_engine() -> Any:
    """The Docker engine's client (DOCKER_HOST is honoured), or a one-line error that says what is missing."""
    try:
        import docker
    except ImportError:
        raise click.ClickException("the Docker SDK is missing: pip install 'gateway_provisioners[docker]'") from None
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise click.ClickException(f"cannot reach the Docker engine: {exc}") from None
    return client


@main.command()
@click.option("--base", required=True, help="Base image with Python 3.9+ (must be on the engine already).")
@click.option("--tag", required=True, help="Tag of the kernel image to build.")
@click.option(
    "--wheels",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of wheels (ipykernel, cryptography and their dependencies) for builds without an index.",
)
@click.option(
    "--language",
    type=click.Choice(["python", "r", "scala"], case_sensitive=False),
    default="python",
    show_default=True,
    help="python: ipykernel; r: IRkernel (the base has R and IRkernel); scala: Apache Toree with pyspark 3.5's Spark "
    "(the base has a JRE).",
)
@click.option("--spark", is_flag=True, help="Add pyspark (Spark, a JRE in the base) to a Python image: SPARK_HOME.")
@click.option("--force", is_flag=True, help="Build even when an image with the same inputs exists.")
def build(base: str, tag: str, wheels: Path | None, language: str, spark: bool, force: bool) -> None:
    """Build a kernel image from BASE with the agent added (Docker SDK; DOCKER_HOST is honoured)."""
    client = docker_engine()
    recipe = recipe_for(language.lower(), spark)
    image_id = build_image(client, base, tag, wheels=wheels, recipe=recipe, force=force, echo=click.echo)
    click.echo(json.dumps({"tag": tag, "id": image_id}))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
