"""``jupyter-ssh-spec``: write kernel specs that run kernels on SSH hosts through ``distributed-provisioner``."""

from __future__ import annotations

import click

from gateway_provisioners.core.errors import ConfigurationError
from gateway_provisioners.core.launch import split_list

from .kernelspec import SpecOptions, build_kernel_json, common_options, emit, kernel_argv, not_yet_option

PROVISIONER = "distributed-provisioner"


@click.group()
@click.version_option(package_name="gateway_provisioners")
def main() -> None:
    """Kernel specs for kernels on a pool of SSH hosts (distributed-provisioner)."""


@main.command()
@common_options
@click.option(
    "--remote-hosts",
    multiple=True,
    required=True,
    help="Host to run kernels on, '[user@]host[:port]'; repeat the option or give a comma list.",
)
@click.option(
    "--ssh-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="SSH port for hosts that name none (default: GP_SSH_PORT or 22).",
)
@click.option("--remote-user", default=None, help="SSH user for hosts that name none (default: GP_REMOTE_USER or you).")
@click.option(
    "--python",
    "python",
    default="python3",
    show_default=True,
    help="Python on the hosts that has ipykernel and cryptography.",
)
@click.option(
    "--load-balancing-algorithm", default=None, help="round-robin (default), least-connection, or module:function."
)
@click.option("--known-hosts", default=None, help="known_hosts file for the hosts' keys (default ~/.ssh/known_hosts).")
@click.option(
    "--client-key",
    "client_keys",
    multiple=True,
    help="Private key file to log in with; repeatable (default: ~/.ssh keys and the SSH agent).",
)
@click.option("--tunnel", is_flag=True, help="Reach kernels through the SSH connection instead of directly.")
# The older jupyter-ssh-spec's Spark options: Spark kernels on SSH hosts come with the Spark support.
@not_yet_option("--spark", "Spark kernels on SSH hosts", takes_value=False)
@not_yet_option("--spark-master", "Spark kernels on SSH hosts")
@not_yet_option("--spark-home", "Spark kernels on SSH hosts")
@not_yet_option("--extra-spark-opts", "Spark kernels on SSH hosts")
@not_yet_option("--spark-init-mode", "Spark kernels on SSH hosts")
def install(
    common: SpecOptions, remote_hosts: tuple[str, ...], ssh_port: int | None, remote_user: str | None, python: str,
    load_balancing_algorithm: str | None, known_hosts: str | None, client_keys: tuple[str, ...], tunnel: bool,
) -> None:  # fmt: skip
    """Write (or print, with --dry-run) a kernel spec for distributed-provisioner."""
    from gateway_provisioners.adapters.ssh import SSHHost, load_selector

    common = common.named(f"ssh_{common.language}")
    hosts = split_list(remote_hosts)
    try:
        for host in hosts:
            SSHHost.parse(host)
        if load_balancing_algorithm:
            load_selector(load_balancing_algorithm)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None
    config = {
        "remote_hosts": hosts,
        "ssh_port": ssh_port,
        "remote_user": remote_user,
        "remote_python": python,
        "load_balancing_algorithm": load_balancing_algorithm,
        "known_hosts": known_hosts,
        "client_keys": list(client_keys) or None,
        "tunnel_kernel_ports": tunnel or None,
    }
    spec = build_kernel_json(
        provisioner=PROVISIONER,
        argv=kernel_argv(common.language, python, common.kernel_class),
        display_name=f"{'Python' if common.language == 'python' else 'R'} on {', '.join(hosts)} (SSH)",
        config=config,
        common=common,
    )
    emit(spec, common)


if __name__ == "__main__":
    main()
