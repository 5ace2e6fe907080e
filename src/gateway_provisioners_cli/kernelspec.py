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
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import click

from gateway_provisioners.core.errors import ConfigurationError
from gateway_provisioners.core.launch import parse_user_list
from gateway_provisioners.core.port_range import PortRange

LANGUAGES = ("python", "r")
KERNEL_NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"
_PLACEHOLDER = re.compile(r"\$\{[^}]*\}|\{(?!connection_file\})[A-Za-z_][A-Za-z0-9_]*\}")


def kernel_argv(language: str, python: str = "python3") -> list[str]:
    """The kernel's own command for ``language``, as it runs where the agent starts it."""
    if language == "python":
        return [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    if language == "r":
        return ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"]
    raise click.BadParameter(f"language {language!r} is not one of {', '.join(LANGUAGES)}")


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
    authorized_users: str
    unauthorized_users: str
    curve: bool
    dry_run: bool


def common_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add the common options to a click command; it receives them as its first argument, a :class:`SpecOptions`."""
    names = [field.name for field in fields(SpecOptions)]

    @functools.wraps(function)
    def command(**values: Any) -> Any:
        common = SpecOptions(**{name: values.pop(name) for name in names})
        return function(common, **values)

    options = [
        click.option("--kernel-name", required=True, help="Name of the kernel spec folder (a-z, 0-9, . _ -)."),
        click.option("--display-name", default=None, help="Name shown in notebook front-ends (default: derived)."),
        click.option("--language", type=click.Choice(LANGUAGES), default="python", show_default=True,
                     help="The kernel's language; decides its argv."),
        click.option("--user", "location", flag_value="user", help="Install for the current user."),
        click.option("--sys-prefix", "location", flag_value="sys-prefix",
                     help="Install into this Python environment's prefix."),
        click.option("--prefix", default=None, help="Install under this prefix (PREFIX/share/jupyter/kernels)."),
        click.option("--replace", is_flag=True, help="Replace an existing kernel spec of the same name."),
        click.option("--port-range", default="0..0", show_default=True,
                     help="Ports the kernel may use on its host: 'lower..upper' (at least 6), or '0..0' for any."),
        click.option("--launch-timeout", type=click.FloatRange(1, 3600), default=30, show_default=True,
                     help="Seconds the kernel has to become ready."),
        click.option("--authorized-users", default="", help="Comma-separated users allowed to start the kernel."),
        click.option("--unauthorized-users", default="root", show_default=True,
                     help="Comma-separated users never allowed to start the kernel."),
        click.option("--curve", is_flag=True,
                     help="Declare that the kernel serves CurveZMQ (it reads Curve keys from its connection file, as "
                          "ipykernel 7.4 does): a kernel manager with transport_encryption auto or required then "
                          "encrypts the kernel's channels."),
        click.option("--dry-run", is_flag=True, help="Print the kernel.json instead of installing it."),
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
    provisioner_config: dict[str, Any] = {
        "launch_timeout": common.launch_timeout,
        "port_range": common.port_range,
        "unauthorized_users": sorted(parse_user_list(common.unauthorized_users)),
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
        "interrupt_mode": "signal",
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
