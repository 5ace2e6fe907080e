"""``jupyter-gp-migrate``: rewrite kernel specs of the older shape (gateway_provisioners ≤ 0.5, Enterprise Gateway).

An older spec's argv runs a launcher script (``launch_ipykernel.py``, ``launch_kubernetes.py``, ``bin/run.sh`` …)
with ``{response_address}``, ``{public_key}``, ``{port_range}`` and ``{kernel_id}``; the kernel's own command is
implied by the launcher. The rewritten spec holds that command (``python -m ipykernel_launcher -f
{connection_file}``), the provisioner's settings under their current names, and ``SPARK_OPTS`` / ``DASK_OPTS`` as
the YARN provisioner's submit settings. The older files (kernel.json, ``scripts/``, ``bin/``) move to
``pre-migrate/`` in the spec's folder, so a conversion can be undone by moving them back.

What cannot be converted mechanically is refused with a one-line reason, and that spec is left as it was:
docs/migration.md lists every case.
"""

from __future__ import annotations

import difflib
import importlib
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import click

from gateway_provisioners.core.launch import split_list
from gateway_provisioners.provisioners.legacy import LEGACY_LAUNCHERS, LEGACY_PLACEHOLDERS, legacy_shape

from .kernelspec import kernel_argv
from .spark import DEFAULT_MASTER, IMAGE_TOREE_JAR, SparkSpec

BACKUP = "pre-migrate"
#: What an older argv runs: a launcher script, or a kernel spec's bin/run.sh (Spark, Dask).
LAUNCHERS = {*LEGACY_LAUNCHERS, "run.sh"}
OLD_FILES = ("kernel.json", "scripts", "bin", "lib")

#: Provisioners of the older package that exist here under the same name.
PROVISIONERS = {
    "kubernetes-provisioner": "gateway_provisioners.provisioners.kubernetes:KubernetesProvisioner",
    "docker-provisioner": "gateway_provisioners.provisioners.docker:DockerProvisioner",
    "docker-swarm-provisioner": "gateway_provisioners.provisioners.docker:DockerSwarmProvisioner",
    "distributed-provisioner": "gateway_provisioners.provisioners.distributed:DistributedProvisioner",
    "yarn-provisioner": "gateway_provisioners.provisioners.yarn:YarnProvisioner",
}
#: Enterprise Gateway's process proxies (metadata.process_proxy.class_name, last part) and their provisioners.
PROCESS_PROXIES = {
    "KubernetesProcessProxy": "kubernetes-provisioner",
    "DockerProcessProxy": "docker-provisioner",
    "DockerSwarmProcessProxy": "docker-swarm-provisioner",
    "DistributedProcessProxy": "distributed-provisioner",
    "YarnClusterProcessProxy": "yarn-provisioner",
}
SPARK_OPERATOR_ANEW = (
    "written anew: the driver of a SparkApplication is now our Spark kernel image (jupyter-spark-images build) "
    "running the agent: jupyter-k8s-spec install --spark --crd --image-name IMAGE --executor-image-name IMAGE "
    "(docs/spark-operator.md)"
)
#: Older provisioners and process proxies with no counterpart, and why.
NOT_CONVERTIBLE = {
    "spark-operator-provisioner": SPARK_OPERATOR_ANEW,
    "SparkOperatorProcessProxy": SPARK_OPERATOR_ANEW,
    "CustomResourceProcessProxy": "written anew: custom-resource-provisioner with a template of your resource "
    "(docs/spark-operator.md)",
    "ConductorClusterProcessProxy": "IBM Spectrum Conductor is not supported",
    "LocalProcessProxy": "a local kernel needs no provisioner: keep the kernel's own argv and drop process_proxy",
}
#: Older settings with no counterpart: dropped, with the reason printed.
DROPPED_SETTINGS = {
    "log_format": "logging is the server's configuration",
    "executor_image_name": "only Spark kernels used it: jupyter-k8s-spec install --spark --executor-image-name",
}
#: Arguments of the older launchers that carry nothing the new spec needs (the agent does their work).
AGENT_ARGUMENTS = {"--kernel-id", "--port-range", "--response-address", "--public-key", "--transport-encryption"}
#: Environment entries only the older run.sh scripts read.
RUN_SH_ENV = {"SPARK_OPTS", "LAUNCH_OPTS", "DASK_OPTS", "DASK_YARN_EXE", "TOREE_OPTS", "__TOREE_OPTS__",
              "__TOREE_SPARK_OPTS__"}  # fmt: skip
#: spark-submit options the YARN provisioner sets itself (value-taking options, and whole --conf values).
SPARK_OWN_OPTIONS = {"--master", "--deploy-mode", "--name", "--proxy-user"}
#: ... and those a client-mode kernel's spec sets itself (the master is carried over on its own).
CLIENT_OWN_OPTIONS = {"--master", "--deploy-mode", "--name"}
#: Backends whose kernels can be Spark drivers in client mode (jupyter-ssh-spec / jupyter-docker-spec --spark).
CLIENT_MODE = {"distributed-provisioner", "docker-provisioner", "docker-swarm-provisioner"}
SPARK_OWN_CONFS = {"spark.yarn.submit.waitAppCompletion"}
DASK_OWN_OPTIONS = {"--name", "--environment", "--queue"}


class Refused(Exception):
    """This spec cannot be converted mechanically; the message says why, in one line."""


@dataclass
class Conversion:
    """The result for one kernel-spec folder."""

    folder: Path
    old: dict[str, Any]
    new: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _launcher_arguments(args: list[str]) -> dict[str, str]:
    """``--name value`` / ``--name=value`` pairs after the launcher (EG's ``--RemoteProcessProxy.`` prefix dropped)."""
    options: dict[str, str] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--"):
            raise Refused(f"argument {arg!r} of the older launcher is not an option: convert this spec by hand")
        name, equals, value = arg.partition("=")
        if not equals:
            if index + 1 >= len(args):
                raise Refused(f"option {arg} of the older launcher has no value: convert this spec by hand")
            value = args[index + 1]
            index += 1
        name = name.replace("--RemoteProcessProxy.", "--")
        options[name] = value
        index += 1
    known = AGENT_ARGUMENTS | {"--spark-context-initialization-mode", "--kernel-class-name", "--cluster-type",
                               "--alternate-sigint", "--customAppName"}  # fmt: skip
    unknown = sorted(set(options) - known)
    if unknown:
        raise Refused(f"unknown argument(s) {', '.join(unknown)} of the older launcher: convert this spec by hand")
    return options


def _provisioner(old: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(provisioner name, its older config) of an older spec."""
    metadata = old.get("metadata") or {}
    stanza = metadata.get("kernel_provisioner")
    if stanza:
        name = stanza.get("provisioner_name", "")
        if name in NOT_CONVERTIBLE:
            raise Refused(f"{name}: {NOT_CONVERTIBLE[name]}")
        if name not in PROVISIONERS:
            raise Refused(f"provisioner {name!r} is not one of {', '.join(PROVISIONERS)}")
        return name, dict(stanza.get("config") or {})
    proxy = metadata.get("process_proxy")
    if proxy:
        cls = str(proxy.get("class_name", "")).rsplit(".", 1)[-1]
        if cls in NOT_CONVERTIBLE:
            raise Refused(f"{cls}: {NOT_CONVERTIBLE[cls]}")
        if cls not in PROCESS_PROXIES:
            raise Refused(f"process proxy {proxy.get('class_name')!r} has no provisioner here")
        return PROCESS_PROXIES[cls], dict(proxy.get("config") or {})
    raise Refused("the spec names no provisioner (metadata.kernel_provisioner or metadata.process_proxy)")


def _settings(provisioner: str, config: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """The older settings under their current names, checked against the provisioner's settings."""
    module, _, cls_name = PROVISIONERS[provisioner].partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    known = set(cls.class_trait_names())
    result: dict[str, Any] = {}
    for key, value in config.items():
        if key in DROPPED_SETTINGS:
            notes.append(f"setting {key} dropped: {DROPPED_SETTINGS[key]}")
            continue
        if key not in known:
            raise Refused(f"setting {key!r} is unknown to {provisioner}: see docs/migration.md for its replacement")
        # A comma string was one item to the older package (and a comma list to Enterprise Gateway); here it is a list.
        if key in ("authorized_users", "unauthorized_users") and value is not None:
            value = sorted(split_list(value))
        elif key == "remote_hosts" and value is not None:
            value = split_list(value)
        result[key] = value
    return result


def _unfilled_template(old: dict[str, Any]) -> list[str]:
    """``${name}`` left by the older jupyter-yarn-spec's install defect, outside env (where ${VAR} is runtime)."""
    text = json.dumps({k: v for k, v in old.items() if k != "env"})
    return sorted(set(re.findall(r"\$\{[a-z_]+\}", text)))


def _split_spark_opts(value: str, own_options: set[str], notes: list[str], what: str) -> str:
    """The options of ``SPARK_OPTS``/``DASK_OPTS`` that the provisioner does not set itself, shell-quoted."""
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise Refused(f"{what} cannot be split: {exc}") from None
    kept: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        name = word.split("=", 1)[0]
        if "KERNEL_EXTRA_SPARK_OPTS" in word:
            notes.append(f"{what}: ${{KERNEL_EXTRA_SPARK_OPTS}} dropped: clients no longer pass spark-submit options")
        elif name in own_options:
            index += 0 if "=" in word else 1  # skip its value too
        elif word == "--conf" and index + 1 < len(words):
            conf = words[index + 1]
            index += 1
            if conf.split("=", 1)[0] in SPARK_OWN_CONFS:
                pass
            elif "$" in conf:
                notes.append(f"{what}: --conf {conf} dropped: spark_opts is not expanded per kernel")
            else:
                kept += ["--conf", conf]
        elif "$" in word:
            notes.append(f"{what}: {word} dropped: spark_opts is not expanded per kernel")
        else:
            kept.append(word)
        index += 1
    return shlex.join(kept)


def convert(folder: Path) -> Conversion:
    """Convert the spec in ``folder`` (nothing is written); raises :class:`Refused` with the reason."""
    try:
        old = json.loads((folder / "kernel.json").read_text())
    except (OSError, ValueError) as exc:
        raise Refused(f"cannot read kernel.json: {exc}") from None
    result = Conversion(folder, old)
    notes = result.notes
    argv = [str(part) for part in old.get("argv") or []]
    if legacy_shape(argv) is None and "process_proxy" not in (old.get("metadata") or {}):
        return result  # already of the current shape: new stays None
    left = _unfilled_template(old)
    if left:
        raise Refused(
            f"{', '.join(left)} were never filled in (the older jupyter-yarn-spec's install defect): "
            "write a new spec with jupyter-yarn-spec install"
        )
    provisioner, old_config = _provisioner(old)
    language = str(old.get("language", "python")).lower()
    if language not in ("python", "r", "scala"):
        raise Refused(f"language {language!r} is not python, r or scala")

    launcher_at = next((i for i, a in enumerate(argv) if PurePath(a).name in LAUNCHERS), None)
    if launcher_at is None:
        raise Refused("the argv runs no launcher of the older package: convert this spec by hand")
    launcher = PurePath(argv[launcher_at]).name
    options = _launcher_arguments(argv[launcher_at + 1 :])
    env = {str(k): str(v) for k, v in (old.get("env") or {}).items()}
    config = _settings(provisioner, old_config, notes)
    kernel_class = options.get("--kernel-class-name")
    init_mode = options.get("--spark-context-initialization-mode", "none").lower()
    cluster = options.get("--cluster-type", "spark").lower()  # the older launcher's default
    # What the older launcher would have set up in the kernel: a Spark session, a Dask cluster, or nothing.
    session = "Dask" if cluster == "dask" else "Spark" if cluster == "spark" and init_mode != "none" else None

    client_spark: SparkSpec | None = None
    if launcher == "launch_custom_resource.py":
        raise Refused(NOT_CONVERTIBLE["spark-operator-provisioner"])
    if language == "scala" and launcher == "run.sh" and provisioner == "kubernetes-provisioner":
        raise Refused(f"not yet: Spark kernels on {provisioner} (docs/migration.md)")  # spark-submit to k8s://
    if language == "scala":
        new_argv = _toree(folder, provisioner, env, init_mode, notes)
        python = ""
    elif launcher == "run.sh" and provisioner == "yarn-provisioner":
        _yarn_submit(env, cluster, config, notes)
        python = config.get("remote_python") or "python3"  # as jupyter-yarn-spec --python-root writes it
    elif (launcher == "run.sh" or session == "Spark") and provisioner == "kubernetes-provisioner":
        raise Refused(
            "Spark kernels on Kubernetes are written anew (the kernel's pod is now the driver, in client mode): "
            "jupyter-k8s-spec install --spark --executor-image-name IMAGE (docs/kubernetes.md, 'Spark')"
        )
    elif session == "Spark" and provisioner in CLIENT_MODE and language == "python":
        # run.sh ran spark-submit with SPARK_OPTS (client mode); now the kernel is the driver and starts its JVM.
        python = env.get("PYSPARK_PYTHON") or "python3"
        client_spark = _client_spark(env, init_mode, notes)
        env.update(client_spark.python_env(python))
    elif launcher == "run.sh" or session:
        raise Refused(f"not yet: {session or 'Spark'} kernels on {provisioner} (docs/migration.md)")
    elif launcher in ("launch_kubernetes.py", "launch_docker.py", "bootstrap-kernel.sh"):
        # The older launcher ran on the server and started the image's bootstrap-kernel.sh; the agent now runs the
        # kernel in the image directly, with the image's python3.
        python = "python3"
    else:  # launch_ipykernel.py / launch_IRkernel.R, started by the interpreter before them
        python = argv[0] if launcher_at >= 1 and language == "python" else "python3"
    if language != "scala":
        in_cluster = session == "Spark" and not client_spark  # YARN cluster mode: the AM waits for the session
        yarn_session = SparkSpec(init_mode=init_mode, background=True) if in_cluster else None
        new_argv = kernel_argv(language, python, kernel_class if language == "python" else None,
                               client_spark or yarn_session)  # fmt: skip
        if session == "Spark" and language == "r":
            notes.append(f"Spark session at start ({init_mode}) dropped: SparkR is not offered at start")
    leftover = sorted(k for k in env if k in RUN_SH_ENV)
    if leftover:
        raise Refused(f"env {', '.join(leftover)} is read only by the older run.sh: not yet on {provisioner}")

    if (folder / "scripts" / "kernel-pod.yaml.j2").exists():
        from .legacy_pod_template import extra_pod_config

        extra = extra_pod_config((folder / "scripts" / "kernel-pod.yaml.j2").read_text())
        if extra:
            config["extra_pod_config"] = extra
            notes.append("the custom pod template's additions became extra_pod_config")
    metadata = {
        k: v for k, v in (old.get("metadata") or {}).items() if k not in ("process_proxy", "kernel_provisioner")
    }
    if metadata.pop("supported_encryption", None):
        notes.append(
            "supported_encryption dropped: declare it again (jupyter-*-spec --curve) if the kernel's ipykernel "
            "serves CurveZMQ (7.4+)"
        )
    metadata["kernel_provisioner"] = {"provisioner_name": provisioner, "config": config}
    result.new = {
        "argv": new_argv,
        "env": env,
        "display_name": old.get("display_name") or folder.name,
        "language": language,
        "interrupt_mode": old.get("interrupt_mode") or "signal",
        "metadata": metadata,
    }
    for placeholder in LEGACY_PLACEHOLDERS:
        if placeholder in json.dumps(result.new):
            raise Refused(f"{placeholder} is still used after conversion: convert this spec by hand")
    return result


def _master_and_options(value: str, notes: list[str], what: str) -> tuple[str, str]:
    """The ``--master`` of a SPARK_OPTS value, and its other options that a client-mode spec keeps."""
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise Refused(f"{what} cannot be split: {exc}") from None
    master = next((words[i + 1] for i, w in enumerate(words[:-1]) if w == "--master"), "")
    master = master or next((w.split("=", 1)[1] for w in words if w.startswith("--master=")), DEFAULT_MASTER)
    return master, _split_spark_opts(value, CLIENT_OWN_OPTIONS, notes, what)


def _client_spark(env: dict[str, str], init_mode: str, notes: list[str]) -> SparkSpec:
    """The client-mode Spark of an older run.sh spec: SPARK_HOME, and SPARK_OPTS's master and options."""
    master, opts = _master_and_options(env.pop("SPARK_OPTS", ""), notes, "SPARK_OPTS")
    env.pop("LAUNCH_OPTS", None)
    return SparkSpec(home=env.get("SPARK_HOME", ""), master=master, opts=opts, init_mode=init_mode)


def _toree(folder: Path, provisioner: str, env: dict[str, str], init_mode: str, notes: list[str]) -> list[str]:
    """The argv of an older Apache Toree spec: Toree run by spark-submit, on the spec's Spark (SSH hosts) or on the
    Spark of a jupyter-image-bootstrap Scala image (containers)."""
    opts = " ".join(v for v in (env.pop("SPARK_OPTS", ""), env.pop("__TOREE_SPARK_OPTS__", "")) if v)
    master, extra = _master_and_options(opts, notes, "SPARK_OPTS")
    for name in ("__TOREE_OPTS__", "TOREE_OPTS", "DEFAULT_INTERPRETER", "LAUNCH_OPTS"):
        if env.pop(name, "").strip():
            notes.append(f"{name} dropped: the Toree argv holds what the kernel needs (see docs/languages.md)")
    if provisioner == "yarn-provisioner":
        raise Refused("Scala kernels in YARN cluster mode: write a new spec with jupyter-yarn-spec install --language "
                      "scala (Toree then runs in the AM container, its own Spark driver)")  # fmt: skip
    if provisioner in ("distributed-provisioner",):
        jars = sorted((folder / "lib").glob("toree-assembly-*.jar"))
        if not jars or not env.get("SPARK_HOME"):
            raise Refused("a Toree spec needs lib/toree-assembly-*.jar in its folder and SPARK_HOME in its env")
        jar = str(folder / BACKUP / "lib" / jars[-1].name)  # where write() moves it
        notes.append(f"Toree's jar stays in {jar}: the hosts must have it at that path (as they had the spec)")
        return kernel_argv("scala", spark=SparkSpec(env["SPARK_HOME"], master, extra, init_mode), toree_jar=jar)
    notes.append("the image must have Spark at /opt/spark and Toree's jar at "
                 f"{IMAGE_TOREE_JAR} (jupyter-image-bootstrap build --language scala)")  # fmt: skip
    env.pop("SPARK_HOME", None)
    return kernel_argv("scala", spark=SparkSpec(home="/opt/spark", master=master, opts=extra, init_mode=init_mode))


def _yarn_submit(env: dict[str, str], cluster: str, config: dict[str, Any], notes: list[str]) -> None:
    """Move run.sh's environment (SPARK_HOME, SPARK_OPTS, DASK_*) into the YARN provisioner's submit settings."""
    if cluster == "dask":
        exe = env.pop("DASK_YARN_EXE", "") or "dask-yarn"
        opts = env.pop("DASK_OPTS", "")
        try:
            words = shlex.split(opts)
        except ValueError as exc:
            raise Refused(f"DASK_OPTS cannot be split: {exc}") from None
        for index, word in enumerate(words[:-1]):
            if word == "--environment" and words[index + 1].startswith("python://"):
                config.setdefault("remote_python", words[index + 1][len("python://") :])
        config["submit_command"] = [exe, "submit"]
        extra = _split_spark_opts(opts, DASK_OWN_OPTIONS, notes, "DASK_OPTS")
    else:
        spark_home = env.get("SPARK_HOME", "")
        config["submit_command"] = [
            str(PurePath(spark_home) / "bin" / "spark-submit") if spark_home else "spark-submit"
        ]
        if env.get("PYSPARK_PYTHON"):
            config.setdefault("remote_python", env["PYSPARK_PYTHON"])
        extra = _split_spark_opts(env.pop("SPARK_OPTS", ""), SPARK_OWN_OPTIONS, notes, "SPARK_OPTS")
    if extra:
        config["spark_opts"] = extra
    env.pop("LAUNCH_OPTS", None)


def _diff(conversion: Conversion) -> str:
    old = (json.dumps(conversion.old, indent=2) + "\n").splitlines(keepends=True)
    new = (json.dumps(conversion.new, indent=2) + "\n").splitlines(keepends=True)
    path = conversion.folder / "kernel.json"
    text = "".join(difflib.unified_diff(old, new, f"{path} (older)", f"{path} (converted)"))
    moved = [name for name in OLD_FILES if (conversion.folder / name).exists()]
    return text + "".join(
        f"  move {conversion.folder / name} -> {conversion.folder / BACKUP / name}\n" for name in moved
    )


def write(conversion: Conversion) -> None:
    """Move the older files to ``pre-migrate/`` and write the converted kernel.json."""
    assert conversion.new is not None
    backup = conversion.folder / BACKUP
    if backup.exists():
        raise Refused(f"{backup} exists from an earlier conversion: move it away first")
    backup.mkdir()
    for name in OLD_FILES:
        if (conversion.folder / name).exists():
            shutil.move(str(conversion.folder / name), str(backup / name))
    (conversion.folder / "kernel.json").write_text(json.dumps(conversion.new, indent=2) + "\n")


def spec_folders(paths: tuple[Path, ...]) -> list[Path]:
    """Kernel-spec folders: each path that holds a kernel.json, or the subfolders of one that does not."""
    folders: list[Path] = []
    for path in paths:
        if (path / "kernel.json").is_file():
            folders.append(path)
        elif path.is_dir():
            folders += sorted(p for p in path.iterdir() if (p / "kernel.json").is_file())
        else:
            raise click.BadParameter(f"{path} is not a kernel-spec folder nor a folder of them", param_hint="PATH")
    return folders


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print what would change (a diff per spec) and write nothing.")
@click.version_option(package_name="gateway_provisioners")
def main(paths: tuple[Path, ...], dry_run: bool) -> None:
    """Convert kernel specs written by gateway_provisioners ≤ 0.5 (or Enterprise Gateway) in PATHS.

    Each PATH is a kernel-spec folder or a folder of them (e.g. PREFIX/share/jupyter/kernels). Specs of the current
    shape are left alone; a spec that cannot be converted is left untouched, with the reason. The exit code is 1 when
    any spec was refused.
    """
    refused = 0
    for folder in spec_folders(paths):
        try:
            conversion = convert(folder)
            if conversion.new is None:
                click.echo(f"{folder}: already of the current shape")
                continue
            if dry_run:
                click.echo(_diff(conversion), nl=False)
            else:
                write(conversion)
                click.echo(f"{folder}: converted (the older files are in {folder / BACKUP})")
            for note in conversion.notes:
                click.echo(f"  note: {note}")
        except Refused as exc:
            refused += 1
            click.echo(f"{folder}: refused: {exc}", err=True)
    if refused:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
