"""Spark in kernel specs: the Spark options of the ``jupyter-*-spec`` commands, the session a Python kernel gets
(``lazy``, ``eager`` or ``none``), and the command of a Scala kernel (Apache Toree, a Spark driver of its own).

A Python kernel stays ``python -m ipykernel_launcher``; its Spark session comes from IPython ``exec_lines`` that the
spec adds to its argv, run by ipykernel before it answers its first request:

* ``lazy``: ``spark`` and ``sc`` are stand-ins; the kernel answers at once and the session is created the first time
  either is used (an attribute of it is read). Until then no JVM runs in client mode. In YARN cluster mode the session
  is started at once in the background (the AM fails an application whose driver makes none in time).
* ``eager``: the session is created before the kernel answers (``kernel_info``), so a client waiting for the kernel
  gets one with its session; a session that cannot start shows its error in the kernel's log and the first cell.
* ``none``: no session; pyspark is there to use as you like.

The session attaches to the driver's JVM when there is one (YARN cluster mode: Spark's AM started the Python driver and
handed it the JVM's gateway) and otherwise starts one with ``spark-submit`` from ``PYSPARK_SUBMIT_ARGS`` (client mode:
the kernel is the driver), then wraps the JVM's SparkContext, which it creates the first time; a restarted kernel finds
it there (a second SparkContext in one JVM is refused, so ``SparkSession.builder`` alone would fail in cluster mode).
While a cell runs, ipykernel replaces pyspark's SIGINT handler (which cancels the jobs) with Python's own, so an
interrupt would stop the cell and leave its Spark job running: a custom exception handler cancels the jobs, from a new
thread (the interrupted thread's Py4J connection may still wait for the interrupted call), then shows the usual
traceback. pyspark starts its JVM ignoring SIGINT, so the interrupt the agent sends to the kernel's process group
reaches only Python.

A Scala kernel is Toree's ``org.apache.toree.Main`` run by ``spark-submit``: the JVM is the driver; Toree's own
``--spark-context-initialization-mode lazy|eager|none`` are the three modes (Toree 0.5 still makes the session on
first use in ``none``). Toree takes SIGINT (it cancels the running cell and its Spark jobs); ``--alternate-sigint`` is
for hosts where SIGINT is ignored.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

INIT_MODES = ("lazy", "eager", "none")
#: Where the images of ``jupyter-image-bootstrap build --language scala`` (or ``--spark``) have Spark and Toree.
IMAGE_SPARK_HOME = "/opt/spark"
IMAGE_TOREE_JAR = "/opt/toree/toree-assembly.jar"
TOREE_MAIN = "org.apache.toree.Main"
DEFAULT_MASTER = "local[*]"

# Run once in the kernel's namespace (its globals): define how the session is made and how an interrupt cancels jobs.
_SESSION_CODE = """\
_gp_spark_lock = __import__('threading').Lock()

def _gp_spark_session():
    global spark, sc
    from pyspark import SparkContext
    from pyspark.sql import SparkSession
    with _gp_spark_lock:
        if SparkContext._active_spark_context is None:
            from pyspark.java_gateway import launch_gateway
            _gw = launch_gateway()
            SparkContext(gateway=_gw, jsc=_gw.jvm.org.apache.spark.api.java.JavaSparkContext(
                _gw.jvm.org.apache.spark.SparkContext.getOrCreate()))
        spark = SparkSession.builder.getOrCreate()
        sc = spark.sparkContext
    return spark

def _gp_cancel_spark_jobs(shell, etype, value, tb, tb_offset=None):
    from pyspark import SparkContext
    if SparkContext._active_spark_context is not None:
        __import__('threading').Thread(target=SparkContext._active_spark_context.cancelAllJobs, daemon=True).start()
    return shell.showtraceback((etype, value, tb), tb_offset=tb_offset)

from py4j.protocol import Py4JNetworkError as _GpPy4JNetworkError
get_ipython().set_custom_exc((KeyboardInterrupt, _GpPy4JNetworkError), _gp_cancel_spark_jobs)
"""

# The stand-ins of lazy mode. Names IPython probes when it shows or inspects a value (_repr_*, _ipython_*, dunders)
# do not start Spark.
_LAZY_CODE = """\
class _GpLazySpark:
    '''Stands for spark or sc until first used: then the Spark session is created and the name rebound.'''
    def __init__(self, name):
        self._gp_name = name
    def __getattr__(self, attr):
        if attr.startswith(('__', '_repr', '_ipython', '_gp')):
            raise AttributeError(attr)
        _gp_spark_session()
        return getattr(globals()[self._gp_name], attr)
    def __repr__(self):
        return '<' + self._gp_name + ': the Spark session is created on first use>'

spark, sc = _GpLazySpark('spark'), _GpLazySpark('sc')
"""


# YARN cluster mode: Spark's AM waits a bounded time (spark.yarn.am.waitTime) for the driver's SparkContext and fails
# the application without one, so a lazy kernel there starts making its session at once, in the background; the
# stand-ins wait for it on first use.
_BACKGROUND_CODE = "__import__('threading').Thread(target=_gp_spark_session, daemon=True).start()\n"


def session_argv(init_mode: str, background: bool = False) -> list[str]:
    """ipykernel options that give a Python kernel its Spark session in ``init_mode`` (none: nothing);
    ``background`` (lazy only) starts making the session as soon as the kernel runs, without waiting for it."""
    if init_mode == "none":
        return []
    if init_mode == "lazy":
        code = _SESSION_CODE + _LAZY_CODE + (_BACKGROUND_CODE if background else "")
    else:
        code = _SESSION_CODE + "_gp_spark_session()\n"
    return [f"--IPKernelApp.exec_lines={code}"]


@dataclass(frozen=True)
class SparkSpec:
    """How a kernel uses Spark where it runs: ``home`` (SPARK_HOME; empty: pyspark's own), ``master``, further
    spark-submit options (shell-quoted) and the session's start-up mode."""

    home: str = ""
    master: str = DEFAULT_MASTER
    opts: str = ""
    init_mode: str = "lazy"
    background: bool = False  # lazy: start making the session at once (YARN cluster mode, see session_argv)

    def submit(self) -> str:
        """``spark-submit`` where the kernel runs."""
        return f"{self.home.rstrip('/')}/bin/spark-submit" if self.home else "spark-submit"

    def options(self) -> list[str]:
        """spark-submit's options: the master, then the extra options (they come last and win)."""
        return ["--master", self.master, *shlex.split(self.opts)]

    def python_env(self, python: str) -> dict[str, str]:
        """The environment a Python kernel (client mode: the kernel is the driver) needs for its session."""
        env = {"PYSPARK_SUBMIT_ARGS": shlex.join([*self.options(), "pyspark-shell"]), "PYSPARK_PYTHON": python}
        if self.home:
            env["SPARK_HOME"] = self.home
        return env


def toree_argv(spark: SparkSpec, toree_jar: str = IMAGE_TOREE_JAR, alternate_sigint: str | None = None) -> list[str]:
    """Apache Toree's command: spark-submit runs its main class; the connection file is Toree's ``--profile``."""
    argv = [spark.submit(), "--name", "Apache Toree", *spark.options(), "--class", TOREE_MAIN, toree_jar,
            "--profile", "{connection_file}", "--spark-context-initialization-mode", spark.init_mode]  # fmt: skip
    if alternate_sigint:
        argv += ["--alternate-sigint", alternate_sigint]
    return argv


def check_spark_opts(value: str, hint: str = "--extra-spark-opts") -> str:
    """``value`` if it splits as shell words; else a one-line usage error."""
    try:
        shlex.split(value)
    except ValueError as exc:
        raise click.BadParameter(f"cannot split {value!r}: {exc}", param_hint=hint) from None
    return value


def spark_client_options(default_home: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The Spark options of a spec command whose kernels are the Spark driver (client mode): they reach the command as
    ``spark`` (bool), ``spark_master``, ``spark_home``, ``extra_spark_opts``, ``spark_init_mode`` and ``toree_jar``;
    :func:`spark_spec` turns them into a :class:`SparkSpec`."""
    options = [
        click.option("--spark", is_flag=True,
                     help="The kernel is a Spark driver (client mode): Python kernels get spark and sc (see "
                          "--spark-init-mode). Scala kernels are Spark drivers with or without it."),
        click.option("--spark-master", default=None,
                     help=f"Spark master URL for the driver (default {DEFAULT_MASTER}; e.g. yarn, spark://host:7077)."),
        click.option("--spark-home", default=default_home or None,
                     help="SPARK_HOME where the kernel runs" + (f" (default {default_home})." if default_home else
                          " (default: the pyspark installation's own; Scala: required).")),
        click.option("--extra-spark-opts", default="", callback=lambda c, p, v: check_spark_opts(v),
                     help="More spark-submit options, shell-quoted (e.g. '--conf spark.executor.memory=2g')."),
        click.option("--spark-init-mode", type=click.Choice(INIT_MODES, case_sensitive=False), default=None,
                     help="'lazy' (default): the kernel answers at once and the session is created on first use; "
                          "'eager': created before the kernel answers; 'none': no session."),
        click.option("--toree-jar", default=IMAGE_TOREE_JAR, show_default=True,
                     help="Scala: Apache Toree's assembly jar where the kernel runs (pip's toree has it in "
                          "toree/lib/)."),
    ]  # fmt: skip

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def spark_spec(
    language: str, spark: bool, master: str | None, home: str | None, opts: str, init_mode: str | None
) -> SparkSpec | None:
    """The Spark of a client-mode kernel from its options, or None when it uses no Spark; usage errors in one line."""
    mode = (init_mode or "lazy").lower()
    uses_spark = spark or language == "scala"
    if not uses_spark:
        given = [name for name, value in (("--spark-master", master), ("--extra-spark-opts", opts),
                                          ("--spark-init-mode", init_mode)) if value]  # fmt: skip
        if given:
            raise click.UsageError(f"{', '.join(given)} need --spark (or --language scala)")
        return None
    if language == "r" and mode != "none":
        raise click.UsageError(
            f"--spark-init-mode {mode}: a SparkR session at start is not offered (pyspark's distribution has no "
            "SparkR package); use --spark-init-mode none and call sparkR.session() where SparkR is installed"
        )
    if language == "scala" and not home:
        raise click.UsageError("--language scala needs --spark-home: the Spark installation Toree runs on")
    return SparkSpec(home=home or "", master=master or DEFAULT_MASTER, opts=opts, init_mode=mode)
