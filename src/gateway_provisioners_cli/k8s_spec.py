"""``jupyter-k8s-spec``: write kernel specs for ``kubernetes-provisioner``, and reap pods of vanished kernels.

``install`` writes an ordinary kernel spec (the kernel's own argv, run by the agent inside the pod) with a
``metadata.kernel_provisioner`` stanza; ``reap`` deletes labelled kernel pods (and per-kernel namespaces) whose
kernel is not among the live ones.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
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
    retired_option,
)

DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"
SPARK_SERVICE_ACCOUNT = "spark-kernel"  # the account deploy/kubernetes/rbac-spark-kernel.yaml creates and binds


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
@click.option("--service-account", default=None,
              help="Service account of kernel pods (default: 'default'; with --spark in a shared namespace: "
                   "'spark-kernel', the account deploy/kubernetes/rbac-spark-kernel.yaml grants).")  # fmt: skip
@click.option(
    "--spark",
    is_flag=True,
    help="The kernel is a Spark driver (client mode); its executors are pods it creates in its namespace.",
)
@click.option(
    "--executor-image-name",
    default=None,
    help="With --spark: the executors' image (jupyter-spark-images build makes one).",
)
@click.option("--spark-init-mode", type=click.Choice(["lazy", "eager", "none"], case_sensitive=False), default=None,
              help="With --spark: 'lazy' (default) gives spark and sc made on first use, the kernel answering at once; "
                   "'eager' makes the session before the kernel is ready; 'none' makes none.")  # fmt: skip
@click.option(
    "--extra-spark-opts",
    default="",
    help="With --spark: more spark-submit options, shell-quoted (e.g. '--conf spark.executor.instances=2').",
)
@retired_option("--spark-home", "Spark comes from the kernel image's pyspark (jupyter-spark-images build)")
@click.option(
    "--crd",
    is_flag=True,
    help="With --spark: the kernel is the driver of a Spark operator SparkApplication "
    "(spark-operator-provisioner; docs/spark-operator.md). --extra-spark-opts may hold --conf only.",
)
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
    service_account: str | None,
    spark: bool,
    executor_image_name: str | None,
    spark_init_mode: str | None,
    extra_spark_opts: str,
    crd: bool,
) -> None:
    """Install a kernel spec whose kernels run in IMAGE_NAME pods."""
    if crd and not spark:
        raise click.UsageError("--crd needs --spark (a SparkApplication's driver is a Spark kernel)")
    name = f"k8s_{common.language}_spark_operator" if crd else f"k8s_spark_{common.language}" if spark else None
    common = common.named(name or f"k8s_{common.language}")
    if service_account is not None and not re.fullmatch(DNS_SUBDOMAIN, service_account):
        raise click.BadParameter(f"{service_account!r} is not a service account name", param_hint="--service-account")
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
    config: dict[str, object] = {
        "image_name": image_name,
        "namespace": namespace,
        "pod_template": pod_template,
        "shared_namespace": False if namespace_per_kernel else None,
        "connection_mode": connection_mode,
        "service_account_name": service_account,
    }
    argv = kernel_argv(common.language, python, common.kernel_class)
    env: dict[str, str] = {}
    provisioner = "kubernetes-provisioner"
    if crd:
        # The operator's spark-submit makes the driver: the kernel attaches to its JVM, and the application carries
        # the executors' image and Spark's configuration; the driver's account creates the executors.
        argv, env = _spark_kernel(common, python, executor_image_name, spark_init_mode, "")
        provisioner = "spark-operator-provisioner"
        if common.launch_timeout < 60:
            click.echo(f"note: --crd: the operator's spark-submit and the driver's JVM come before the kernel (16 s on "
                       f"an idle test cluster); --launch-timeout {common.launch_timeout:g} s may be too short",
                       err=True)  # fmt: skip
        config.pop("connection_mode")
        config.update(executor_image_name=env.pop("GP_SPARK_EXECUTOR_IMAGE"), spark_conf=_spark_conf(extra_spark_opts)
                      or None, service_account_name=service_account or SPARK_SERVICE_ACCOUNT)  # fmt: skip
        if namespace_per_kernel or connection_mode or pod_template:
            raise click.UsageError("--crd: the operator watches a shared namespace, the server assigns the ports and "
                                   "the SparkApplication template makes the pod (no --namespace-per-kernel, "
                                   "--connection-mode or --pod-template)")  # fmt: skip
    elif spark:
        argv, env = _spark_kernel(common, python, executor_image_name, spark_init_mode, extra_spark_opts)
        # The driver creates its executors with the pod's service account; in a shared namespace that is an account
        # of its own, bound to the Role of rbac-spark-kernel.yaml (a per-kernel namespace gets kernel_role_rules).
        if not namespace_per_kernel:
            config["service_account_name"] = service_account or SPARK_SERVICE_ACCOUNT
            config["mount_service_account_token"] = True
    else:
        for name, value in (("--executor-image-name", executor_image_name), ("--spark-init-mode", spark_init_mode),
                            ("--extra-spark-opts", extra_spark_opts)):  # fmt: skip
            if value:
                raise click.UsageError(f"{name} needs --spark")
    spec = build_kernel_json(
        common=common,
        provisioner=provisioner,
        argv=argv,
        display_name=f"{language_name(common.language)} on Kubernetes"
        + (" (Spark operator)" if crd else " with Spark" if spark else "")
        + f" ({image_name})",
        config=config,
        env=env,
    )
    emit(spec, common)


def _spark_kernel(common: SpecOptions, python: str, executor_image: str | None, init_mode: str | None,
                  extra_opts: str) -> tuple[list[str], dict[str, str]]:  # fmt: skip
    """The argv and env of a Spark driver kernel: gp_spark_kernel.py's text run by the image's Python."""
    from gateway_provisioners.agent import spark_kernel_path

    if common.language != "python":
        raise click.UsageError(f"--spark: not yet for {common.language!r} kernels on Kubernetes; use --language python")
    if not executor_image:
        raise click.UsageError("--spark needs --executor-image-name (the executors' image: jupyter-spark-images build)")
    try:
        shlex.split(extra_opts)
    except ValueError as exc:
        raise click.BadParameter(f"cannot split {extra_opts!r}: {exc}", param_hint="--extra-spark-opts") from None
    # The kernel's own text goes into argv (python -c): any image with ipykernel and pyspark runs it, nothing to add.
    argv = [python, "-c", spark_kernel_path().read_text(), "-f", "{connection_file}"]
    argv += kernel_argv("python", python, common.kernel_class)[5:]  # an ipykernel subclass, if any
    env = {"GP_SPARK_INIT_MODE": (init_mode or "lazy").lower(), "GP_SPARK_EXECUTOR_IMAGE": executor_image}
    if env["GP_SPARK_INIT_MODE"] == "eager" and common.launch_timeout < 120:
        click.echo(f"note: eager: the launch includes the Spark session and its first executors; --launch-timeout "
                   f"{common.launch_timeout:g} s may be too short for them", err=True)  # fmt: skip
    if extra_opts:
        env["SPARK_OPTS"] = extra_opts
    return argv, env


def _spark_conf(extra_opts: str) -> dict[str, str]:
    """``--conf key=value`` pairs of ``extra_opts`` as a SparkApplication's sparkConf; other options are refused."""
    try:
        words = shlex.split(extra_opts)
    except ValueError as exc:
        raise click.BadParameter(f"cannot split {extra_opts!r}: {exc}", param_hint="--extra-spark-opts") from None
    conf: dict[str, str] = {}
    while words:
        option = words.pop(0)
        if option.startswith("--conf="):
            pair = option.removeprefix("--conf=")
        elif option == "--conf" and words:
            pair = words.pop(0)
        else:
            pair = ""
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(
                f"with --crd only '--conf key=value' options are possible, not {option!r} (put others in the "
                "SparkApplication template)",
                param_hint="--extra-spark-opts",
            )
        conf[key] = value
    return conf


def _resource(text: str) -> tuple[str, str, str]:
    """(group, version, plural) of ``PLURAL.GROUP/VERSION``; else a one-line usage error."""
    match = re.fullmatch(rf"({DNS_LABEL})\.({DNS_SUBDOMAIN})/([a-z0-9]+)", text)
    if not match:
        raise click.BadParameter(f"{text!r} is not PLURAL.GROUP/VERSION (e.g. sparkapplications.sparkoperator.k8s.io/"
                                 "v1beta2)", param_hint="--resource")  # fmt: skip
    return match.group(3), match.group(5), match.group(1)


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
@click.option("--resource", "resources", multiple=True, callback=lambda c, p, v: [_resource(r) for r in v],
              help="Custom resources of custom-resource kernels to reap too, as PLURAL.GROUP/VERSION (repeatable), "
                   "e.g. sparkapplications.sparkoperator.k8s.io/v1beta2.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="List what would be removed.")
def reap(
    servers: tuple[str, ...],
    token: str,
    keep: tuple[str, ...],
    namespace: str | None,
    min_age: float,
    kubeconfig: str,
    context: str,
    resources: list[tuple[str, str, str]],
    dry_run: bool,
) -> None:
    """Remove kernel pods, per-kernel namespaces (and --resource objects) whose kernel no longer exists."""
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
            return await reap_orphans(client, alive, namespace=namespace, min_age=min_age, dry_run=dry_run,
                                      resources=resources)  # fmt: skip
        finally:
            await client.close()

    try:
        removed = asyncio.run(run())
    except Exception as exc:
        raise click.ClickException(str(exc)) from None
    verb = "would remove" if dry_run else "removed"
    for item in removed:
        name = item.get("pod") or item.get("name")
        where = item["namespace"] if item["kind"] == "Namespace" else f"{item['namespace']}/{name}"
        click.echo(f"{verb} {item['kind']} {where} (kernel {item['kernel_id']})")
    if not removed:
        click.echo("nothing to remove", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
