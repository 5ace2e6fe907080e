"""``jupyter-yarn-spec``: write kernel specs for ``yarn-provisioner`` (kernels as Hadoop YARN applications).

Without ``--spark`` / ``--dask`` the agent is submitted through the ResourceManager's REST API and runs the kernel in
the AM container, under a small AM that registers with the RM and heartbeats (any language with a kernel on the
nodes; long-lived: the RM does not expire it); with ``--spark`` it is submitted with ``spark-submit
--master yarn --deploy-mode cluster`` and a Python kernel gets ``spark`` and ``sc``; with ``--dask`` it is submitted
with ``dask-yarn submit`` and runs in the dask.client container of a Dask cluster on YARN. Every value is written
into the spec (nothing is left for a launch script to substitute), and ``--impersonation-enabled`` is written too.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click

from .kernelspec import SpecOptions, build_kernel_json, common_options, emit, kernel_argv

# The kernel attaches to the driver's JVM (Spark's AM starts it and hands its gateway to the Python driver: the
# agent, and through it the kernel) and wraps the JVM's SparkContext, which it creates the first time; a restarted
# kernel finds it there (a second SparkContext in one JVM is refused, so SparkSession.builder alone would fail).
# While a cell runs, ipykernel replaces pyspark's SIGINT handler (which cancels the jobs) with Python's own, so an
# interrupt would stop the cell and leave its Spark job running: a custom exception handler cancels the jobs, from a
# new thread (the interrupted thread's Py4J connection may still wait for the interrupted call), then shows the usual
# traceback. The interrupted Py4J call ends in KeyboardInterrupt or, at times, in Py4JNetworkError ("Answer from Java
# side is empty"): both cancel.
SPARK_SESSION = (
    "--IPKernelApp.exec_lines=from pyspark import SparkContext; from pyspark.sql import SparkSession; "
    "from pyspark.java_gateway import launch_gateway; from py4j.protocol import Py4JNetworkError; "
    "_gw = launch_gateway(); "
    "sc = SparkContext(gateway=_gw, jsc=_gw.jvm.org.apache.spark.api.java.JavaSparkContext("
    "_gw.jvm.org.apache.spark.SparkContext.getOrCreate())); "
    "spark = SparkSession.builder.getOrCreate(); del _gw; "
    "get_ipython().set_custom_exc((KeyboardInterrupt, Py4JNetworkError), "
    "lambda shell, etype, value, tb, tb_offset=None: "
    "__import__('threading').Thread(target=sc.cancelAllJobs).start() "
    "or shell.showtraceback((etype, value, tb), tb_offset=tb_offset))"
)


@click.group()
@click.version_option(package_name="gateway_provisioners")
def main() -> None:
    """Kernel specs for kernels that run as YARN applications."""


@main.command()
@common_options
@click.option(
    "--yarn-endpoint",
    default=lambda: os.environ.get("GP_YARN_ENDPOINT", ""),
    help="ResourceManager address, http(s)://host:8088 (default GP_YARN_ENDPOINT; empty: yarn-site.xml).",
)
@click.option(
    "--alt-yarn-endpoint",
    default=lambda: os.environ.get("GP_ALT_YARN_ENDPOINT", ""),
    help="Second ResourceManager for HA (default GP_ALT_YARN_ENDPOINT).",
)
@click.option("--spark", is_flag=True, help="Submit with spark-submit (cluster mode); Python kernels get spark, sc.")
@click.option(
    "--dask",
    is_flag=True,
    help="Submit with 'dask-yarn submit' (the kernel runs in the client container of a Dask cluster on YARN).",
)
@click.option(
    "--spark-home",
    default=lambda: os.environ.get("SPARK_HOME", ""),
    help="Spark installation whose bin/spark-submit submits (default SPARK_HOME; else spark-submit on PATH).",
)
@click.option(
    "--extra-spark-opts", default="", help="More spark-submit options, shell-quoted (e.g. '--num-executors 2')."
)
@click.option(
    "--python-root",
    default="",
    help="Prefix of the Python environment on the cluster's nodes (PREFIX/bin/python3 runs agent and kernel).",
)
@click.option("--queue", default=None, help="YARN queue when the request gives no KERNEL_QUEUE (default: 'default').")
@click.option(
    "--impersonation-enabled",
    is_flag=True,
    help="Run applications as the kernel's user (spark-submit --proxy-user / dask-yarn's yarn.user KERNEL_USERNAME).",
)
@click.option("--yarn-endpoint-security-enabled", is_flag=True, help="Authenticate to the RM with Kerberos/SPNEGO.")
@click.option("--cert-bundle", default=None, help="CA bundle for an https ResourceManager.")
@click.option(
    "--spark-init-mode",
    type=click.Choice(["lazy", "eager", "none"], case_sensitive=False),
    default=None,
    help="With --spark: 'lazy' or 'eager' give a Python kernel spark and sc when it starts (default), 'none' does "
    "not create a Spark session.",
)
@click.option("--extra-dask-opts", default="", help="More 'dask-yarn submit' options with --dask, shell-quoted.")
def install(
    common: SpecOptions,
    yarn_endpoint: str,
    alt_yarn_endpoint: str,
    spark: bool,
    dask: bool,
    spark_home: str,
    extra_spark_opts: str,
    python_root: str,
    queue: str | None,
    impersonation_enabled: bool,
    yarn_endpoint_security_enabled: bool,
    cert_bundle: str | None,
    spark_init_mode: str | None,
    extra_dask_opts: str,
) -> None:
    """Install a kernel spec whose kernels run as YARN applications."""
    for hint, value in (("--extra-spark-opts", extra_spark_opts), ("--extra-dask-opts", extra_dask_opts)):
        try:
            shlex.split(value)
        except ValueError as exc:
            raise click.BadParameter(f"cannot split {value!r}: {exc}", param_hint=hint) from None
    if spark and dask:
        raise click.UsageError("--spark and --dask exclude each other: choose one way to submit")
    if extra_spark_opts and not spark:
        raise click.UsageError("--extra-spark-opts needs --spark")
    if extra_dask_opts and not dask:
        raise click.UsageError("--extra-dask-opts needs --dask")
    init_mode = (spark_init_mode or "lazy").lower()
    if spark_init_mode and init_mode != "none" and not spark:
        raise click.UsageError(
            f"--spark-init-mode {init_mode} needs --spark (the older jupyter-yarn-spec wrote Spark kernels unless "
            "--dask; this one does with --spark)"
        )
    if spark_init_mode and spark and init_mode != "none" and common.language != "python":
        raise click.UsageError(
            f"--spark-init-mode {init_mode}: not yet: a Spark session at start for {common.language!r} kernels "
            "(see docs/migration.md); use --spark-init-mode none"
        )
    common = common.named(f"yarn_dask_{common.language}" if dask else f"yarn_spark_{common.language}" if spark
                          else f"yarn_{common.language}")  # fmt: skip
    python = str(Path(python_root) / "bin" / "python3") if python_root else "python3"
    argv = kernel_argv(common.language, python, common.kernel_class)
    # The older launcher made 'lazy' and 'eager' the same (a session when the kernel starts); so does this one.
    if spark and common.language == "python" and init_mode != "none":
        argv.append(SPARK_SESSION)
    config: dict[str, object] = {
        "yarn_endpoint": yarn_endpoint or None,
        "alt_yarn_endpoint": alt_yarn_endpoint or None,
        "queue": queue,
        "impersonation_enabled": impersonation_enabled,
        "yarn_endpoint_security_enabled": yarn_endpoint_security_enabled or None,
        "yarn_cert_bundle": cert_bundle,
        "remote_python": python if python_root else None,
    }
    if spark:
        config["submit_command"] = [str(Path(spark_home) / "bin" / "spark-submit") if spark_home else "spark-submit"]
        config["spark_opts"] = extra_spark_opts or None
    if dask:
        # dask-yarn runs the agent with --environment python://<remote_python> (python_root's, else python3).
        config["submit_command"] = ["dask-yarn", "submit"]
        config["spark_opts"] = extra_dask_opts or None  # spark_opts: further options for any submit command
    mode = "Spark" if spark else "Dask" if dask else "YARN"
    spec = build_kernel_json(
        common=common,
        provisioner="yarn-provisioner",
        argv=argv,
        display_name=f"{common.language.capitalize()} on {mode} (cluster)",
        config=config,
    )
    emit(spec, common)
