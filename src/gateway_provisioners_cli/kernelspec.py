"""The kernel-spec writer every ``jupyter-*-spec`` command shares: common options, argv per language, install.

A spec written here is an ordinary kernel spec — ``argv`` is the kernel's own command — plus a
``metadata.kernel_provisioner`` stanza naming the provisioner and its configuration. Nothing is left for anyone to
fill in later except ``{connection_file}``, which the agent fills in where the kernel runs; :func:`unfilled` checks it.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import click

from gateway_provisioners.core.errors import ConfigurationError
from gateway_provisioners.core.launch import parse_user_list
from gateway_provisioners.core.port_range import PortRange

from .spark import IMAGE_SPARK_HOME, IMAGE_TOREE_JAR, SparkSpec, session_argv, toree_argv

#: Kernel languages (any case on the command line): ipykernel, IRkernel, Apache Toree.
LANGUAGES = ("python", "r", "scala")
LANGUAGE_CHOICES = LANGUAGES
#: How jupyter_client interrupts: a SIGINT through the provisioner (the agent signals the kernel's process group), or
#: an ``interrupt_request`` on the kernel's control channel for kernels that take one (ipykernel does; IRkernel 1.3
#: and Toree 0.5 do not, they take SIGINT).
INTERRUPT_MODES = ("signal", "message")
DEFAULT_KERNEL_CLASS = "ipykernel.ipkernel.IPythonKernel"
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
KERNEL_NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"
_PLACEHOLDER = re.compile(r"\$\{[^}]*\}|\{(?!connection_file\})[A-Za-z_][A-Za-z0-9_]*\}")


def kernel_argv(
    language: str,
    python: str = "python3",
    kernel_class: str | None = None,
    spark: SparkSpec | None = None,
    toree_jar: str = IMAGE_TOREE_JAR,
) -> list[str]:
    """The kernel's own command for ``language``, as it runs where the agent starts it.

    ``kernel_class`` (Python only) is an ipykernel subclass, ``module.Class``; the older package's
    ``--ipykernel-subclass-name`` became ``--kernel-class-name`` of its launcher, ipykernel takes it directly.
    ``spark``: a Python kernel gets its session's start-up (:func:`.spark.session_argv`); a Scala kernel is Toree on
    that Spark (default: the Spark of the images ``jupyter-image-bootstrap build --language scala`` makes, local[*]).
    """
    language = language.lower()
    if language == "python":
        argv = [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        if kernel_class and kernel_class != DEFAULT_KERNEL_CLASS:
            argv.append(f"--IPKernelApp.kernel_class={kernel_class}")
        return argv + (session_argv(spark.init_mode, spark.background) if spark else [])
    if kernel_class and kernel_class != DEFAULT_KERNEL_CLASS:
        raise click.UsageError(f"--ipykernel-subclass-name is for Python kernels, not {language!r}: leave it out")
    if language == "r":
        return ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"]
    if language == "scala":
        return toree_argv(spark or SparkSpec(home=IMAGE_SPARK_HOME), toree_jar)
    raise click.BadParameter(f"language {language!r} is not one of {', '.join(LANGUAGES)}")


def language_name(language: str) -> str:
    """The language as display names show it."""
    return {"python": "Python", "r": "R", "scala": "Scala"}.get(language, language.capitalize())


def unfilled(value: Any) -> list[str]:
    """Placeholders other than ``{connection_file}`` left anywhere in a kernel.json (should be none)."""
    return sorted(set(_PLACEHOLDER.findall(json.dumps(value))))


@dataclass(frozen=True)
class SpecOptions:
    """The options every ``jupyter-*-spec install`` command takes, as one value."""

    kernel_name: str
    display_name: str | None
    language: str
    location: str | None
    prefix: str | None
    replace: bool
    port_range: str
    launch_timeout: float
    authorized_users: tuple[str, ...]
    unauthorized_users: tuple[str, ...]
    curve: bool
    dry_run: bool
    kernel_class: str | None
    interrupt_mode: str

    def named(self, default: str) -> SpecOptions:
        """These options with ``default`` as the kernel name when none was given (the older CLIs' names)."""
        return self if self.kernel_name else replace(self, kernel_name=default)


def retired_option(name: str, replacement: str, *, takes_value: bool = True) -> Callable[..., Any]:
    """A hidden option of the older package's CLIs that no longer makes sense: using it is a one-line error saying
    what replaces it (rather than click's "no such option", which does not)."""

    def refuse(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value not in (None, False, ()):
            raise click.UsageError(f"{name} is gone: {replacement}", ctx=ctx)

    if takes_value:
        return click.option(name, hidden=True, expose_value=False, default=None, callback=refuse, is_eager=True)
    return click.option(name, hidden=True, expose_value=False, is_flag=True, callback=refuse, is_eager=True)


def not_yet_option(name: str, what: str, *, takes_value: bool = True) -> Callable[..., Any]:
    """A hidden option of the older package's CLIs that this one cannot honour yet: a one-line "not yet" error."""
    return retired_option(name, f"not yet: {what} (see docs/migration.md)", takes_value=takes_value)


#: Options of the older package's traitlets applications (every CLI had them) and what replaces each.
RETIRED_APP_OPTIONS = [
    retired_option("--config", "settings belong to the server's Jupyter config, see docs/configuration.md"),
    retired_option("--log-level", "these commands do not log; --dry-run prints the kernel.json they would write"),
    retired_option("--debug", "these commands do not log; --dry-run prints the kernel.json they would write",
                   takes_value=False),
    retired_option("--show-config", "--dry-run prints the kernel.json with every setting", takes_value=False),
    retired_option("--show-config-json", "--dry-run prints the kernel.json with every setting", takes_value=False),
    retired_option("--generate-config", "settings belong to the server's Jupyter config, see docs/configuration.md",
                   takes_value=False),
]  # fmt: skip


def _check_kernel_class(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _DOTTED.fullmatch(value):
        raise click.BadParameter(f"{value!r} is not 'module.Class' (e.g. ipykernel.ipkernel.IPythonKernel)")
    return value


def common_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add the common options to a click command; it receives them as its first argument, a :class:`SpecOptions`."""
    names = [field.name for field in fields(SpecOptions)]

    @functools.wraps(function)
    def command(**values: Any) -> Any:
        values["language"] = values["language"].lower()
        values["interrupt_mode"] = values["interrupt_mode"].lower()
        common = SpecOptions(**{name: values.pop(name) for name in names})
        return function(common, **values)

    options = [
        click.option("--kernel-name", default=None,
                     help="Name of the kernel spec folder (a-z, 0-9, . _ -; default: the older CLIs' name, e.g. "
                          "ssh_python)."),
        click.option("--display-name", default=None, help="Name shown in notebook front-ends (default: derived)."),
        click.option("--language", type=click.Choice(LANGUAGE_CHOICES, case_sensitive=False), default="python",
                     show_default=True, help="The kernel's language (any case); decides its argv."),
        click.option("--user", "location", flag_value="user", help="Install for the current user."),
        click.option("--sys-prefix", "location", flag_value="sys-prefix",
                     help="Install into this Python environment's prefix."),
        click.option("--prefix", default=None, help="Install under this prefix (PREFIX/share/jupyter/kernels)."),
        click.option("--replace", is_flag=True, help="Replace an existing kernel spec of the same name."),
        click.option("--port-range", default="0..0", show_default=True,
                     help="Ports the kernel may use on its host: 'lower..upper' (at least 6), or '0..0' for any."),
        click.option("--launch-timeout", type=click.FloatRange(1, 3600), default=30, show_default=True,
                     help="Seconds the kernel has to become ready."),
        # Repeated list options accumulate, as in the older CLIs: '--unauthorized-users root --unauthorized-users bob'
        # denies both (a single-valued option would keep only bob, and root would silently be allowed).
        click.option("--authorized-users", multiple=True,
                     help="Users allowed to start the kernel; repeat the option or give a comma list."),
        click.option("--unauthorized-users", multiple=True, default=("root",), show_default=True,
                     help="Users never allowed to start the kernel; repeat the option or give a comma list."),
        click.option("--curve", is_flag=True,
                     help="Declare that the kernel serves CurveZMQ (it reads Curve keys from its connection file, as "
                          "ipykernel 7.4 does): a kernel manager with transport_encryption auto or required then "
                          "encrypts the kernel's channels."),
        click.option("--dry-run", is_flag=True, help="Print the kernel.json instead of installing it."),
        click.option("--interrupt-mode", type=click.Choice(INTERRUPT_MODES, case_sensitive=False), default="signal",
                     show_default=True,
                     help="How the kernel is interrupted: 'signal' (SIGINT, sent by the provisioner through the "
                          "agent) or 'message' (an interrupt_request on the kernel's control channel, for kernels "
                          "that take one, e.g. ipykernel)."),
        click.option("--ipykernel-subclass-name", "kernel_class", default=None, callback=_check_kernel_class,
                     help="An ipykernel subclass, module.Class, to run instead of IPythonKernel (Python only)."),
        *RETIRED_APP_OPTIONS,
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def build_kernel_json(
    *,
    provisioner: str,
    argv: list[str],
    display_name: str,
    config: dict[str, Any],
    common: SpecOptions,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A complete kernel.json; raises :class:`click.BadParameter` for invalid values."""
    try:
        PortRange.parse(common.port_range)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--port-range") from None
    if common.interrupt_mode == "message" and common.language != "python":
        raise click.UsageError(
            f"--interrupt-mode message: the {language_name(common.language)} kernel (IRkernel, Toree) does not answer "
            "interrupt_request messages; leave it at signal (the agent sends SIGINT)"
        )
    denied = parse_user_list(common.unauthorized_users)
    if "root" not in denied:
        click.echo("note: root may start this kernel (include root in --unauthorized-users to deny it)", err=True)
    provisioner_config: dict[str, Any] = {
        "launch_timeout": common.launch_timeout,
        "port_range": common.port_range,
        "unauthorized_users": sorted(denied),
    }
    if parse_user_list(common.authorized_users):
        provisioner_config["authorized_users"] = sorted(parse_user_list(common.authorized_users))
    provisioner_config.update({k: v for k, v in config.items() if v is not None})
    metadata: dict[str, Any] = {"kernel_provisioner": {"provisioner_name": provisioner, "config": provisioner_config}}
    if common.curve:
        metadata["supported_encryption"] = ["curve"]  # read by jupyter_client's transport_encryption policy
    spec = {
        "argv": argv,
        "display_name": common.display_name or display_name,
        "language": common.language,
        "interrupt_mode": common.interrupt_mode,
        "env": env or {},
        "metadata": metadata,
    }
    left = unfilled(spec)
    if left:
        raise click.ClickException(f"the kernel spec would keep unfilled placeholders {left}: check the options")
    return spec


def install(spec: dict[str, Any], kernel_name: str, location: str | None, prefix: str | None, replace: bool) -> Path:
    """Install ``spec`` as ``kernel_name`` with jupyter_client's KernelSpecManager; returns the installed folder."""
    from jupyter_client.kernelspec import KernelSpecManager

    if not re.fullmatch(KERNEL_NAME_PATTERN, kernel_name):
        raise click.BadParameter(
            f"{kernel_name!r}: use lower case letters, digits and . _ -", param_hint="--kernel-name"
        )
    if prefix and location:
        raise click.UsageError("--prefix cannot be combined with --user or --sys-prefix")
    manager = KernelSpecManager()
    target_prefix = sys.prefix if location == "sys-prefix" else prefix
    destination = Path(manager._get_destination_dir(kernel_name, user=location == "user", prefix=target_prefix))
    if destination.exists() and not replace:
        raise click.ClickException(
            f"kernel spec {kernel_name!r} exists at {destination}: pass --replace to overwrite it"
        )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / kernel_name
        folder.mkdir()
        (folder / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
        installed = manager.install_kernel_spec(str(folder), kernel_name, user=location == "user", prefix=target_prefix)
    return Path(installed)


def emit(spec: dict[str, Any], common: SpecOptions) -> None:
    """Print the kernel.json (``--dry-run``) or install it and say where."""
    if common.dry_run:
        click.echo(json.dumps(spec, indent=2))
        return
    folder = install(spec, common.kernel_name, common.location, common.prefix, common.replace)
    click.echo(f"installed kernel spec {common.kernel_name!r} in {folder}")
