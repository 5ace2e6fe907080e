"""``yarn-provisioner``: kernels as Hadoop YARN applications, submitted through the ResourceManager's REST API or
through the kernel spec's own submit command (``spark-submit --master yarn --deploy-mode cluster`` or
``dask-yarn submit``).

The agent runs as the application master and calls back to this server's response listener (callback mode), so
YARN's nodes must reach ``response_ip:response_port``. Settings keep the older package's names
(``GP_YARN_ENDPOINT``, ``GP_ALT_YARN_ENDPOINT``, ``GP_YARN_ENDPOINT_SECURITY_ENABLED``, ``GP_IMPERSONATION_ENABLED``,
``GP_YARN_CERT_BUNDLE``, ``KERNEL_QUEUE``, ...). See docs/yarn.md.
"""

from __future__ import annotations

import getpass
import os
import shlex

from traitlets import Bool, Float, List, Unicode, default

from ..adapters.yarn import YarnBackend, YarnShared
from ..adapters.yarn.submit import AM_JAVA, DEFAULT_AM_CLASSPATH
from ..core.backend import Backend
from ..core.errors import ConfigurationError
from ..core.launch import COMMON_PARAMS, ConnectionMode, Param, parse_bool
from .base import RemoteProvisionerBase, env_default, env_number

YARN_PARAMS: tuple[Param, ...] = (
    *COMMON_PARAMS,
    Param("KERNEL_QUEUE", pattern=r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", help="a YARN queue name"),
    Param("KERNEL_DRIVER_MEMORY", pattern=r"\d{1,7}[kKmMgGtT]?", help="a size like 1024m or 2g"),
    Param("KERNEL_EXECUTOR_MEMORY", pattern=r"\d{1,7}[kKmMgGtT]?", help="a size like 1024m or 2g"),
    Param("KERNEL_DRIVER_CORES", kind=int, minimum=1, maximum=64),
)


class YarnProvisioner(RemoteProvisionerBase):
    """Run the kernel in a YARN container (the application master), next to the cluster's data."""

    param_schema = YARN_PARAMS

    yarn_endpoint = Unicode(
        help="""ResourceManager web address, http(s)://host:8088 (GP_YARN_ENDPOINT). Several may be given separated by
        commas. Empty: read yarn-site.xml from YARN_CONF_DIR / HADOOP_CONF_DIR, including the HA list.""",
    ).tag(config=True)

    alt_yarn_endpoint = Unicode(
        help="Second ResourceManager for high availability (GP_ALT_YARN_ENDPOINT); the active one is used."
    ).tag(config=True)

    yarn_endpoint_security_enabled = Bool(
        help="Authenticate to the RM with Kerberos/SPNEGO (GP_YARN_ENDPOINT_SECURITY_ENABLED; extra 'yarn-kerberos')."
    ).tag(config=True)

    impersonation_enabled = Bool(
        help="""Run the application as the kernel's user (GP_IMPERSONATION_ENABLED): spark-submit gets --proxy-user
        KERNEL_USERNAME, dask-yarn gets DASK_YARN__USER. REST submission always submits as the kernel's user under
        simple auth.""",
    ).tag(config=True)

    yarn_cert_bundle = Unicode(
        help="TLS verification for an https RM: 'true', 'false' or a CA bundle path (GP_YARN_CERT_BUNDLE; true)."
    ).tag(config=True)

    yarn_service_user = Unicode(
        help="User of the shared status queries under simple auth (GP_YARN_USER; default: the server's user)."
    ).tag(config=True)

    submit_command = List(
        Unicode(),
        help="""The command that submits the kernel, e.g. ['spark-submit'], ['/opt/spark/bin/spark-submit',
        '--conf', 'spark.x=y'] or ['dask-yarn', 'submit'] (GP_YARN_SUBMIT_COMMAND, shell-quoted). Empty: submit
        through the RM's REST API.""",
    ).tag(config=True)

    spark_opts = Unicode(help="Further options for the submit command, shell-quoted (SPARK_OPTS).").tag(config=True)

    queue = Unicode(help="Queue when the request gives no KERNEL_QUEUE (GP_YARN_QUEUE; 'default').").tag(config=True)

    remote_python = Unicode(
        help="Python on the cluster's nodes that runs the agent and a 'python' kernel argv (GP_YARN_PYTHON; python3)."
    ).tag(config=True)

    am_memory = Unicode(help="AM container memory without KERNEL_DRIVER_MEMORY (GP_YARN_AM_MEMORY; 1g).").tag(
        config=True
    )

    application_master = Unicode(
        help="""REST submission's application master (GP_YARN_APPLICATION_MASTER): 'java' (default) runs a small
        AM (GpYarnAm.java, from source, with the nodes' Java and Hadoop jars) that registers with the RM, heartbeats
        and runs the agent; 'agent' makes the agent the AM container's process, which never registers, so the RM
        expires the kernel after yarn.am.liveness-monitor.expiry-interval-ms (10 minutes by default).""",
    ).tag(config=True)

    am_classpath = Unicode(
        help="""Where the Java AM finds Hadoop's jars and configuration on the nodes (GP_YARN_AM_CLASSPATH): the
        cluster's yarn.application.classpath, ':'-separated, $VARIABLES allowed. Default: Hadoop's default.""",
    ).tag(config=True)

    poll_interval = Float(
        help="""Seconds between the shared RM queries once every kernel runs (GP_YARN_POLL_INTERVAL; 15). One query
        serves every kernel of this server.""",
    ).tag(config=True)

    startup_poll_interval = Float(
        help="Seconds between the shared RM queries while a launch waits for YARN (GP_YARN_STARTUP_POLL_INTERVAL; 1)."
    ).tag(config=True)

    shutdown_wait_time = Float(
        help="Seconds to wait for a killed application's final state (GP_YARN_SHUTDOWN_WAIT_TIME; 15)."
    ).tag(config=True)

    @default("yarn_endpoint")
    def _default_yarn_endpoint(self) -> str:
        return env_default("GP_YARN_ENDPOINT")

    @default("alt_yarn_endpoint")
    def _default_alt_yarn_endpoint(self) -> str:
        return env_default("GP_ALT_YARN_ENDPOINT")

    @default("yarn_endpoint_security_enabled")
    def _default_security(self) -> bool:
        return parse_bool(
            env_default("GP_YARN_ENDPOINT_SECURITY_ENABLED", default="false"), "GP_YARN_ENDPOINT_SECURITY_ENABLED"
        )

    @default("impersonation_enabled")
    def _default_impersonation(self) -> bool:
        return parse_bool(env_default("GP_IMPERSONATION_ENABLED", default="false"), "GP_IMPERSONATION_ENABLED")

    @default("yarn_cert_bundle")
    def _default_cert_bundle(self) -> str:
        return env_default("GP_YARN_CERT_BUNDLE", default="true")

    @default("yarn_service_user")
    def _default_service_user(self) -> str:
        return env_default("GP_YARN_USER") or getpass.getuser()

    @default("submit_command")
    def _default_submit_command(self) -> list[str]:
        return shlex.split(env_default("GP_YARN_SUBMIT_COMMAND"))

    @default("spark_opts")
    def _default_spark_opts(self) -> str:
        return env_default("SPARK_OPTS")

    @default("queue")
    def _default_queue(self) -> str:
        return env_default("GP_YARN_QUEUE", default="default")

    @default("remote_python")
    def _default_remote_python(self) -> str:
        return env_default("GP_YARN_PYTHON", default="python3")

    @default("am_memory")
    def _default_am_memory(self) -> str:
        return env_default("GP_YARN_AM_MEMORY", default="1g")

    @default("application_master")
    def _default_application_master(self) -> str:
        return env_default("GP_YARN_APPLICATION_MASTER", default=AM_JAVA)

    @default("am_classpath")
    def _default_am_classpath(self) -> str:
        return env_default("GP_YARN_AM_CLASSPATH", default=DEFAULT_AM_CLASSPATH)

    @default("poll_interval")
    def _default_poll_interval(self) -> float:
        return env_number("GP_YARN_POLL_INTERVAL", float, "15", 0.1, 3600)

    @default("startup_poll_interval")
    def _default_startup_poll_interval(self) -> float:
        return env_number("GP_YARN_STARTUP_POLL_INTERVAL", float, "1", 0.05, 60)

    @default("shutdown_wait_time")
    def _default_shutdown_wait_time(self) -> float:
        return env_number("GP_YARN_SHUTDOWN_WAIT_TIME", float, "15", 0, 3600)

    def endpoints(self) -> tuple[str, ...]:
        """The RM addresses in order: yarn_endpoint (comma-separated allowed), then alt_yarn_endpoint."""
        listed = [e.strip() for e in f"{self.yarn_endpoint},{self.alt_yarn_endpoint}".split(",") if e.strip()]
        return tuple(dict.fromkeys(listed))

    def _verify(self) -> bool | str:
        value = self.yarn_cert_bundle.strip()
        if value.lower() in ("true", "false", "1", "0", "yes", "no", ""):
            return parse_bool(value or "true", "GP_YARN_CERT_BUNDLE")
        path = os.path.expanduser(value)
        if not os.path.isfile(path):  # requests would only say "invalid path" deep inside the first RM call
            raise ConfigurationError(
                f"GP_YARN_CERT_BUNDLE (yarn_cert_bundle) names no file: {value!r}; "
                "give the path of the PEM CA bundle that signed the ResourceManager's certificate, or true/false"
            )
        return path

    def backend_modes(self) -> tuple[ConnectionMode, ...]:
        return YarnBackend.modes

    def make_backend(self) -> Backend:
        """One client and poller per RM and process (shared by every kernel spec); a light backend per kernel."""
        shared = YarnShared.get(
            self.endpoints(),
            verify=self._verify(),
            kerberos=self.yarn_endpoint_security_enabled,
            service_user=self.yarn_service_user,
            interval=self.poll_interval,
            startup_interval=self.startup_poll_interval,
        )
        return YarnBackend(
            shared,
            submit_command=list(self.submit_command),
            extra_submit_options=shlex.split(self.spark_opts),
            queue=self.queue,
            python=self.remote_python,
            impersonation=self.impersonation_enabled,
            memory=self.am_memory,
            shutdown_wait=self.shutdown_wait_time,
            application_master=self.application_master.strip().lower(),
            am_classpath=self.am_classpath,
        )

    def kernel_ip(self) -> str:
        return "0.0.0.0"  # the agent advertises the node's address that routes to the response listener

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return max(recommended, self.shutdown_wait_time)
