"""``jupyter-ssh-spec``: write kernel specs that run kernels on SSH hosts through ``distributed-provisioner``."""

from __future__ import annotations

import click

from gateway_provisioners.core.errors import ConfigurationError
from gateway_provisioners.core.launch import split_list

from .kernelspec import SpecOptions, build_kernel_json, common_options, emit, kernel_argv, language_name
from .spark import spark_client_options, spark_spec

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
# Spark client mode: the kernel on the host is the Spark driver (local[*], a standalone master, or YARN client mode).
@spark_client_options()
def install(
    common: SpecOptions, remote_hosts: tuple[str, ...], ssh_port: int | None, remote_user: str | None, python: str,
    load_balancing_algorithm: str | None, known_hosts: str | None, client_keys: tuple[str, ...], tunnel: bool,
    spark: bool, spark_master: str | None, spark_home: str | None, extra_spark_opts: str,
    spark_init_mode: str | None, toree_jar: str,
) -> None:  # fmt: skip
    """Write (or print, with --dry-run) a kernel spec for distributed-provisioner."""
    from gateway_provisioners.adapters.ssh import SSHHost, load_selector

    driver = spark_spec(common.language, spark, spark_master, spark_home, extra_spark_opts, spark_init_mode)
    common = common.named(f"ssh_spark_{common.language}" if spark else f"ssh_{common.language}")
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
    env: dict[str, str] = {}
    if driver and common.language == "python":
        env = driver.python_env(python)
    elif driver and driver.home:
        env = {"SPARK_HOME": driver.home}
    spec = build_kernel_json(
        provisioner=PROVISIONER,
        argv=kernel_argv(common.language, python, common.kernel_class, driver, toree_jar),
        display_name=f"{language_name(common.language)}{' with Spark' if driver else ''} on {', '.join(hosts)} (SSH)",
        config=config,
        common=common,
        env=env,
    )
    emit(spec, common)


if __name__ == "__main__":
    main()
