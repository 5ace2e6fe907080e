"""``jupyter-docker-spec``: write kernel specs for ``docker-provisioner`` / ``docker-swarm-provisioner``, and reap.

``install`` writes an ordinary kernel spec (the kernel's own argv, run by the agent inside the image) with a
``metadata.kernel_provisioner`` stanza; ``reap`` removes containers or services this server's owner label marks
whose kernel no longer exists.
"""

from __future__ import annotations

import asyncio
import json
import sys

import click

from .kernelspec import SpecOptions, build_kernel_json, common_options, emit, kernel_argv, language_name
from .spark import IMAGE_SPARK_HOME, spark_client_options, spark_spec


@click.group()
@click.version_option(package_name="gateway_provisioners")
def main() -> None:
    """Kernel specs and housekeeping for kernels in Docker containers and Swarm services."""


@main.command()
@common_options
@click.option("--image-name", required=True, help="Kernel image with the agent (see jupyter-image-bootstrap).")
@click.option("--swarm", is_flag=True, help="Run kernels as Swarm services (docker-swarm-provisioner).")
@click.option(
    "--network",
    default=None,
    help="Network for kernel containers (default: bridge; Swarm: host). 'host' uses callback mode.",
)
@click.option(
    "--pull-policy",
    type=click.Choice(["never", "missing", "always"]),
    default=None,
    help="When to pull the image (default: missing).",
)
@click.option("--owner", default=None, help="Owner label value for the reaper (default: gateway-provisioners).")
@click.option(
    "--python",
    "python",
    default="python3",
    show_default=True,
    help="The interpreter that runs ipykernel inside the image.",
)
# Spark client mode in the container (the images of 'jupyter-image-bootstrap build --spark / --language scala').
@spark_client_options(default_home=IMAGE_SPARK_HOME)
def install(
    common: SpecOptions, image_name: str, swarm: bool, network: str | None, pull_policy: str | None,
    owner: str | None, python: str, spark: bool, spark_master: str | None, spark_home: str | None,
    extra_spark_opts: str, spark_init_mode: str | None, toree_jar: str,
) -> None:  # fmt: skip
    """Install a kernel spec whose kernels run in IMAGE_NAME containers (or Swarm services)."""
    driver = spark_spec(common.language, spark, spark_master, spark_home, extra_spark_opts, spark_init_mode)
    common = common.named(f"docker_spark_{common.language}" if spark else f"docker_{common.language}")
    provisioner = "docker-swarm-provisioner" if swarm else "docker-provisioner"
    env = driver.python_env(python) if driver and common.language == "python" else {}
    spec = build_kernel_json(
        common=common,
        provisioner=provisioner,
        argv=kernel_argv(common.language, python, common.kernel_class, driver, toree_jar),
        display_name=f"{language_name(common.language)} on {'Swarm' if swarm else 'Docker'} ({image_name})",
        config={"image_name": image_name, "network": network, "image_pull_policy": pull_policy, "owner": owner},
        env=env,
    )
    emit(spec, common)


@main.command()
@click.option("--swarm", is_flag=True, help="Reap Swarm services instead of containers.")
@click.option(
    "--owner", envvar="GP_DOCKER_OWNER", default=None, help="Owner label to reap (default: GP_DOCKER_OWNER, else the "
    "provisioner's default owner).",
)  # fmt: skip
@click.option(
    "--live",
    "live",
    multiple=True,
    help="Id of a kernel that still exists; with any --live (or --live-file), every other owned "
    "container or service is removed, running or not.",
)
@click.option(
    "--live-file",
    type=click.File(),
    default=None,
    help="JSON list of live kernel ids, e.g. from a server's /api/kernels (objects with 'id' work too).",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed.")
@click.option("--docker-url", default=None, help="Engine address (default: DOCKER_HOST or the local socket).")
def reap(
    swarm: bool, owner: str | None, live: tuple[str, ...], live_file: object, dry_run: bool, docker_url: str | None
) -> None:
    """Remove owned kernel containers/services whose kernel no longer exists.

    Without --live, "no longer exists" means the container (or the service's task) is not running: its agent, and so
    its kernel, ended. With --live, every owned resource of a kernel not listed is removed.
    """
    from gateway_provisioners.adapters.docker_common import DEFAULT_OWNER, shared_engine
    from gateway_provisioners.core.errors import GatewayProvisionersError

    live_ids: set[str] | None = set(live) if live else None
    if live_file is not None:
        data = json.load(live_file)  # type: ignore[arg-type]
        live_ids = (live_ids or set()) | {str(k["id"]) if isinstance(k, dict) else str(k) for k in data}
    owner = owner or DEFAULT_OWNER

    async def run() -> list[dict]:
        engine = shared_engine(docker_url)
        try:
            if swarm:
                from gateway_provisioners.adapters.swarm import SwarmBackend

                backend = SwarmBackend(engine)
            else:
                from gateway_provisioners.adapters.docker import DockerBackend

                backend = DockerBackend(engine)  # type: ignore[assignment]
            return await backend.reap(live_ids, owner=owner, dry_run=dry_run)
        finally:
            await engine.close()

    try:
        removed = asyncio.run(run())
    except GatewayProvisionersError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # the SDK's errors: one line, not a traceback
        raise click.ClickException(f"reaping failed: {exc}") from None
    kind = "service" if swarm else "container"
    verb = "would remove" if dry_run else "removed"
    for item in removed:
        click.echo(
            f"{verb} {item.get('kind', kind)} {item['name']} (kernel {item['kernel_id'] or '?'}, {item['state']})"
        )
    what = "service(s) and launch secret(s)" if swarm else "container(s)"
    click.echo(f"{verb} {len(removed)} {what} with owner {owner!r}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
