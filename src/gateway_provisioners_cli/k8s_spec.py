"""``jupyter-k8s-spec``: write kernel specs for ``kubernetes-provisioner``, and reap pods of vanished kernels.

``install`` writes an ordinary kernel spec (the kernel's own argv, run by the agent inside the pod) with a
``metadata.kernel_provisioner`` stanza; ``reap`` deletes labelled kernel pods (and per-kernel namespaces) whose
kernel is not among the live ones.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import urllib.request
from pathlib import Path

import click

from .kernelspec import (
    SpecOptions,
    build_kernel_json,
    common_options,
    emit,
    kernel_argv,
    language_name,
    not_yet_option,
    retired_option,
)

DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"


@click.group()
@click.version_option(package_name="gateway_provisioners")
def main() -> None:
    """Kernel specs and housekeeping for kernels in Kubernetes pods."""


@main.command()
@common_options
@click.option("--image-name", required=True, help="Kernel image holding Python 3.9+ and the agent.")
@click.option("--namespace", default=None, help="Namespace of kernel pods (default: GP_NAMESPACE, else 'default').")
@click.option("--pod-template", default=None, type=click.Path(dir_okay=False), help="A Jinja2 pod template file.")
@click.option("--namespace-per-kernel", is_flag=True, help="Give each kernel its own namespace (with a Role).")
@click.option("--connection-mode", type=click.Choice(["assigned", "callback"]), default=None,
              help="How the server learns the kernel's ports (default: assigned, no callback).")  # fmt: skip
@click.option("--python", "python", default="python3", show_default=True, help="The interpreter in the image.")
# The older jupyter-k8s-spec's Spark options: Spark kernels on Kubernetes come with the Spark support.
@not_yet_option("--spark", "Spark kernels on Kubernetes", takes_value=False)
@not_yet_option("--executor-image-name", "Spark executors on Kubernetes")
@not_yet_option("--spark-home", "Spark kernels on Kubernetes")
@not_yet_option("--extra-spark-opts", "Spark kernels on Kubernetes")
@not_yet_option("--spark-init-mode", "Spark kernels on Kubernetes")
@not_yet_option("--crd", "Spark-operator (SparkApplication) kernels; spark-operator-provisioner is not part of 1.0",
                takes_value=False)  # fmt: skip
@retired_option("--tensorflow", "it never changed the kernel spec; name a TensorFlow image with --image-name",
                takes_value=False)  # fmt: skip
def install(
    common: SpecOptions,
    image_name: str,
    namespace: str | None,
    pod_template: str | None,
    namespace_per_kernel: bool,
    connection_mode: str | None,
    python: str,
) -> None:
    """Install a kernel spec whose kernels run in IMAGE_NAME pods."""
    common = common.named(f"k8s_{common.language}")
    if namespace is not None and not re.fullmatch(DNS_LABEL, namespace):
        raise click.BadParameter(f"{namespace!r} is not a namespace name (a-z, 0-9, -)", param_hint="--namespace")
    if pod_template is not None:
        path = Path(pod_template)
        if not path.is_file():
            raise click.BadParameter(f"{pod_template} does not exist", param_hint="--pod-template")
        from gateway_provisioners.adapters.kubernetes.pod_template import _compile

        try:
            _compile(path.read_text())
        except Exception as exc:
            raise click.BadParameter(str(exc), param_hint="--pod-template") from None
        pod_template = str(path.resolve())
    spec = build_kernel_json(
        common=common,
        provisioner="kubernetes-provisioner",
        argv=kernel_argv(common.language, python, common.kernel_class),
        display_name=f"{language_name(common.language)} on Kubernetes ({image_name})",
        config={
            "image_name": image_name,
            "namespace": namespace,
            "pod_template": pod_template,
            "shared_namespace": False if namespace_per_kernel else None,
            "connection_mode": connection_mode,
        },
    )
    emit(spec, common)


def _server_kernels(url: str, token: str) -> set[str]:
    request = urllib.request.Request(url.rstrip("/") + "/api/kernels", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return {kernel["id"] for kernel in json.load(response)}


@main.command()
@click.option("--server", "servers", multiple=True, help="A Jupyter server URL whose kernels are alive (repeatable).")
@click.option("--token", envvar="JUPYTER_TOKEN", default="", help="Token for --server (env JUPYTER_TOKEN).")
@click.option("--keep", multiple=True, help="A kernel id that is alive (repeatable).")
@click.option("--namespace", default=None, help="Only this namespace (default: all, which needs cluster list rights).")
@click.option("--min-age", type=click.FloatRange(0), default=300, show_default=True,
              help="Seconds a pod must have existed before it may be removed.")  # fmt: skip
@click.option(
    "--kubeconfig", envvar="GP_KUBECONFIG", default="", help="kubeconfig file (default: in-cluster / ~/.kube)."
)
@click.option("--context", default="", help="kubeconfig context.")
@click.option("--dry-run", is_flag=True, help="List what would be removed.")
def reap(
    servers: tuple[str, ...],
    token: str,
    keep: tuple[str, ...],
    namespace: str | None,
    min_age: float,
    kubeconfig: str,
    context: str,
    dry_run: bool,
) -> None:
    """Remove kernel pods and per-kernel namespaces whose kernel no longer exists."""
    if not servers and not keep:
        raise click.UsageError("say which kernels are alive: --server URL (with --token) and/or --keep KERNEL_ID")
    alive = set(keep)
    for url in servers:
        try:
            alive |= _server_kernels(url, token)
        except Exception as exc:
            raise click.ClickException(f"cannot list the kernels of {url}: {exc}") from None

    async def run() -> list[dict]:
        from gateway_provisioners.adapters.kubernetes.client import KubeClient
        from gateway_provisioners.adapters.kubernetes.reaper import reap_orphans

        client = KubeClient(kubeconfig, context)
        try:
            return await reap_orphans(client, alive, namespace=namespace, min_age=min_age, dry_run=dry_run)
        finally:
            await client.close()

    try:
        removed = asyncio.run(run())
    except Exception as exc:
        raise click.ClickException(str(exc)) from None
    verb = "would remove" if dry_run else "removed"
    for item in removed:
        where = item["namespace"] if item["kind"] == "Namespace" else f"{item['namespace']}/{item['pod']}"
        click.echo(f"{verb} {item['kind']} {where} (kernel {item['kernel_id']})")
    if not removed:
        click.echo("nothing to remove", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
