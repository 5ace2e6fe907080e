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

from ..adapters.yarn import YarnBackend, YarnShared
from ..adapters.yarn.submit import AM_AGENT, AM_JAVA, DEFAULT_AM_CLASSPATH
from ..core.backend import Backend
from ..core.errors import ConfigurationError
from ..core.launch import COMMON_PARAMS, ConnectionMode, Param, parse_bool
from .base import RemoteProvisionerBase
from .settings import Flag, Number, Sequence, Text, parse_command, setting

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

    yarn_endpoint = setting(
        Text, "GP_YARN_ENDPOINT", default="", default_doc="from yarn-site.xml in YARN_CONF_DIR or HADOOP_CONF_DIR",
        help="ResourceManager web address, http(s)://host:8088; several may be given separated by commas. Empty: "
        "read yarn-site.xml, including the HA list.",
    )  # fmt: skip
    alt_yarn_endpoint = setting(
        Text, "GP_ALT_YARN_ENDPOINT", default="",
        help="Second ResourceManager for high availability; the active one is used.",
    )  # fmt: skip
    yarn_endpoint_security_enabled = setting(
        Flag, "GP_YARN_ENDPOINT_SECURITY_ENABLED", default=False,
        help="Authenticate to the RM with Kerberos/SPNEGO (extra 'yarn-kerberos').",
    )  # fmt: skip
    impersonation_enabled = setting(
        Flag, "GP_IMPERSONATION_ENABLED", default=False,
        help="Run the application as the kernel's user: spark-submit gets --proxy-user KERNEL_USERNAME, dask-yarn "
        "gets DASK_YARN__USER. REST submission always submits as the kernel's user under simple auth.",
    )  # fmt: skip
    yarn_cert_bundle = setting(
        Text, "GP_YARN_CERT_BUNDLE", default="true", limits_doc="`true`, `false` or the path of a PEM file",
        help="TLS verification for an https RM: 'true', 'false' or a CA bundle path.",
    )  # fmt: skip
    yarn_service_user = setting(
        Text, "GP_YARN_USER", default=lambda p: getpass.getuser(), default_doc="the server's user",
        help="User of the shared status queries under simple auth.",
    )  # fmt: skip
    submit_command = setting(
        Sequence, "GP_YARN_SUBMIT_COMMAND", default=[], parse=parse_command,
        default_doc="empty: submit through the RM's REST API", limits_doc="the variable is shell-quoted",
        help="The command that submits the kernel, e.g. ['spark-submit'], ['/opt/spark/bin/spark-submit', '--conf', "
        "'spark.x=y'] or ['dask-yarn', 'submit'].",
    )  # fmt: skip
    spark_opts = setting(Text, "SPARK_OPTS", default="", help="Further options for the submit command, shell-quoted.")
    queue = setting(Text, "GP_YARN_QUEUE", default="default", help="Queue when the request gives no KERNEL_QUEUE.")
    remote_python = setting(
        Text, "GP_YARN_PYTHON", default="python3",
        help="Python on the cluster's nodes that runs the agent and a 'python' kernel argv.",
    )  # fmt: skip
    am_memory = setting(Text, "GP_YARN_AM_MEMORY", default="1g", help="AM container memory without "
                        "KERNEL_DRIVER_MEMORY.")  # fmt: skip
    application_master = setting(
        Text, "GP_YARN_APPLICATION_MASTER", default=AM_JAVA, choices=(AM_JAVA, AM_AGENT),
        help="REST submission's application master: 'java' runs a small AM (GpYarnAm.java, from source, with the "
        "nodes' Java and Hadoop jars) that registers with the RM, heartbeats and runs the agent; 'agent' makes the "
        "agent the AM container's process, which never registers, so the RM expires the kernel after "
        "yarn.am.liveness-monitor.expiry-interval-ms (10 minutes by default).",
    )  # fmt: skip
    am_classpath = setting(
        Text, "GP_YARN_AM_CLASSPATH", default=DEFAULT_AM_CLASSPATH, default_doc="Hadoop's default",
        help="Where the Java AM finds Hadoop's jars and configuration on the nodes: the cluster's "
        "yarn.application.classpath, ':'-separated, $VARIABLES allowed.",
    )  # fmt: skip
    poll_interval = setting(
        Number, "GP_YARN_POLL_INTERVAL", default=15.0, minimum=0.1, maximum=3600,
        help="Seconds between the shared RM queries once every kernel runs; one query serves every kernel of this "
        "server.",
    )  # fmt: skip
    startup_poll_interval = setting(
        Number, "GP_YARN_STARTUP_POLL_INTERVAL", default=1.0, minimum=0.05, maximum=60,
        help="Seconds between the shared RM queries while a launch waits for YARN.",
    )  # fmt: skip
    shutdown_wait_time = setting(
        Number, "GP_YARN_SHUTDOWN_WAIT_TIME", default=15.0, minimum=0, maximum=3600,
        help="Seconds to wait for a killed application's final state.",
    )  # fmt: skip

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
