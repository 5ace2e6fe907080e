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

from .kernelspec import SpecOptions, build_kernel_json, common_options, emit, kernel_argv, language_name
from .spark import IMAGE_TOREE_JAR, SparkSpec, session_argv

# The Python kernel's session (lazy, eager or none) is made by spark.session_argv: it attaches to the driver's JVM that
# Spark's AM started in cluster mode. 'none' suits only a kernel that makes its own SparkContext soon: the AM gives up
# without one after spark.yarn.am.waitTime (100 s by default).
#: The argv item of an eager session (kept for readers of older specs and for jupyter-gp-migrate).
SPARK_SESSION = session_argv("eager")[0]


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
    help="With --spark (or --language scala): 'lazy' (default): the kernel answers at once and its Spark session is "
    "created on first use; 'eager': created before the kernel answers; 'none': no Spark session.",
)
@click.option("--extra-dask-opts", default="", help="More 'dask-yarn submit' options with --dask, shell-quoted.")
@click.option(
    "--toree-jar",
    default=IMAGE_TOREE_JAR,
    show_default=True,
    help="--language scala: Apache Toree's assembly jar on the nodes (pip's toree has it in toree/lib/).",
)
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
    toree_jar: str,
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
    scala = common.language == "scala"
    if spark_init_mode and init_mode != "none" and not (spark or scala):
        raise click.UsageError(
            f"--spark-init-mode {init_mode} needs --spark (the older jupyter-yarn-spec wrote Spark kernels unless "
            "--dask; this one does with --spark)"
        )
    if spark_init_mode and spark and init_mode != "none" and common.language == "r":
        raise click.UsageError(
            f"--spark-init-mode {init_mode}: a SparkR session at start is not offered (pyspark's distribution has no "
            "SparkR package); use --spark-init-mode none"
        )
    if scala and (spark or dask):
        raise click.UsageError(
            "--language scala runs Apache Toree, a Spark driver of its own, in the AM container (client mode): "
            "leave out --spark / --dask"
        )
    common = common.named(f"yarn_dask_{common.language}" if dask else f"yarn_spark_{common.language}" if spark
                          else f"yarn_{common.language}")  # fmt: skip
    python = str(Path(python_root) / "bin" / "python3") if python_root else "python3"
    # Cluster mode: spark-submit's own options make the session; the kernel's session code attaches to its JVM.
    # In cluster mode Spark's AM needs the session soon: a lazy Python kernel starts it in the background.
    driver = SparkSpec(home=spark_home, init_mode=init_mode, background=spark) if spark or scala else None
    argv = kernel_argv(common.language, python, common.kernel_class, driver, toree_jar)
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
        display_name=f"{language_name(common.language)} on {mode} (cluster)",
        config=config,
    )
    emit(spec, common)
