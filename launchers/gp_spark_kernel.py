"""An IPython kernel that is a Spark driver (client mode): ``spark`` and ``sc`` are ready at start (eager), created on
first use (lazy), or not made at all (none).

It runs where the kernel runs, started by the agent like any kernel argv::

    python3 gp_spark_kernel.py -f CONNECTION_FILE [ipykernel options]
    python3 -c "<this file's text>" -f CONNECTION_FILE         (how `jupyter-k8s-spec install --spark` writes it)

and needs only ipykernel and pyspark (with a Java runtime) in the image. Its settings come from the environment (the
kernel spec's ``env``):

``GP_SPARK_INIT_MODE``
    ``lazy`` (default): the kernel answers at once; ``spark`` and ``sc`` stand for a session that is created the first
    time either is used. ``eager``: the session is created before the kernel binds its ports, so the launch (and its
    ``launch_timeout``) includes it and a session that cannot start fails the launch with Spark's own error.
    ``none``: no session; pyspark is there to use as you like.
``GP_SPARK_MASTER``
    The master URL. Default inside a Kubernetes pod: ``k8s://https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``
    — executors are pods that this driver creates through the API, with the pod's service account.
``GP_SPARK_EXECUTOR_IMAGE``
    The executors' image (``spark.kubernetes.container.image``).
``SPARK_OPTS``
    Further spark-submit options, shell-quoted (``--conf spark.executor.instances=2 ...``); they come last and win.

On Kubernetes the driver is the kernel's pod: its name (``spark.kubernetes.driver.pod.name``) makes Spark put an
ownerReference to it on every executor pod, so the garbage collector deletes the executors with the kernel's pod
(shutdown, a failed launch, the reaper), and executors reach the driver at the pod's IP (``spark.driver.host``).
Executor pods get a template of secure defaults (non-root, no privilege escalation, no capabilities, no API token).

Under spark-submit (the kernel of a SparkApplication: the operator's spark-submit made the driver, whose main
application is the agent, which started this kernel) the driver's JVM is running already: the session attaches to
it and has the application's configuration; nothing above applies.

Interrupt: pyspark starts its JVM ignoring SIGINT, and ipykernel replaces pyspark's SIGINT handler while a cell runs, so
an interrupt stops the cell but not its Spark jobs. A custom exception handler cancels them (from a new thread: the
interrupted thread's Py4J connection may still wait for the interrupted call), then shows the usual traceback.

Standard library, ipykernel and pyspark only. Avoid braces around names in this file: the kernel-spec writer checks
that kernel.json holds no placeholder but ``{connection_file}``.
"""

import json
import os
import shlex
import socket
import sys
import tempfile
import threading

MODES = ("lazy", "eager", "none")
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def in_pod_facts():
    """(pod name, namespace, pod IP) of the pod this runs in; empty strings where unknown."""
    name = os.environ.get("GP_POD_NAME") or socket.gethostname()  # a pod's hostname is its name
    namespace = os.environ.get("GP_POD_NAMESPACE", "")
    if not namespace and os.path.exists(os.path.join(SA_DIR, "namespace")):
        with open(os.path.join(SA_DIR, "namespace")) as f:
            namespace = f.read().strip()
    ip = os.environ.get("GP_POD_IP", "")
    if not ip:
        try:
            ip = socket.gethostbyname(socket.gethostname())  # the kubelet's /etc/hosts maps the name to the pod IP
        except OSError:
            ip = ""
    return name, namespace, ip


def executor_pod_template(uid, gid):
    """The executors' pod template: the kernel pod's secure defaults (JSON is YAML)."""
    security = {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "seccompProfile": {"type": "RuntimeDefault"}}
    container = {
        "name": "executor",
        "securityContext": {"allowPrivilegeEscalation": False, "privileged": False, "runAsNonRoot": True,
                            "capabilities": {"drop": ["ALL"]}},
    }  # fmt: skip
    return {"apiVersion": "v1", "kind": "Pod",
            "spec": {"automountServiceAccountToken": False, "enableServiceLinks": False,
                     "securityContext": security, "containers": [container]}}  # fmt: skip


def submit_args(env, facts, template_file=""):
    """The spark-submit arguments of this driver (without the trailing ``pyspark-shell``)."""
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "443")
    master = env.get("GP_SPARK_MASTER") or ("k8s://https://" + host + ":" + port if host else "")
    args = ["--master", master] if master else []
    conf = []
    if master.startswith("k8s://"):
        name, namespace, ip = facts
        kernel_id = env.get("KERNEL_ID", "")
        conf += [
            ("spark.app.name", "kernel-" + kernel_id if kernel_id else name),
            ("spark.kubernetes.driver.pod.name", name),
            ("spark.kubernetes.executor.podNamePrefix", name[:47].rstrip("-")),
        ]
        conf = [(k, v) for k, v in conf if v]
        if namespace:
            conf.append(("spark.kubernetes.namespace", namespace))
        if ip:
            conf.append(("spark.driver.host", ip))  # executors reach the driver at the pod's IP
        for key, file in (("caCertFile", "ca.crt"), ("oauthTokenFile", "token")):
            if os.path.exists(os.path.join(SA_DIR, file)):
                conf.append(("spark.kubernetes.authenticate." + key, os.path.join(SA_DIR, file)))
        if env.get("GP_SPARK_EXECUTOR_IMAGE"):
            conf.append(("spark.kubernetes.container.image", env["GP_SPARK_EXECUTOR_IMAGE"]))
        if template_file:
            conf.append(("spark.kubernetes.executor.podTemplateFile", template_file))
    for key, value in conf:
        args += ["--conf", key + "=" + value]
    return args + shlex.split(env.get("SPARK_OPTS", ""))


def prepare(env):
    """Set PYSPARK_SUBMIT_ARGS for the session this kernel may create."""
    template_file = ""
    master = env.get("GP_SPARK_MASTER") or ("k8s://" if env.get("KUBERNETES_SERVICE_HOST") else "")
    if master.startswith("k8s://"):
        fd, template_file = tempfile.mkstemp(prefix="gp-executor-pod-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            json.dump(executor_pod_template(os.getuid(), os.getgid()), f)
    args = submit_args(env, in_pod_facts(), template_file)
    os.environ["PYSPARK_SUBMIT_ARGS"] = shlex.join([*args, "pyspark-shell"])


def under_spark_submit():
    """True when spark-submit started this kernel's process tree (the driver of a SparkApplication): the driver's JVM
    is already running, and its address and secret are in the environment (pyspark's PythonRunner puts them there)."""
    return bool(os.environ.get("PYSPARK_GATEWAY_PORT"))


def create_session():
    from pyspark.sql import SparkSession

    if under_spark_submit():
        # Attach to the driver JVM's context, made on the first launch, or still there after a restart of this
        # kernel (a JVM holds one SparkContext): its configuration is spark-submit's, from the application.
        from pyspark import SparkContext
        from pyspark.java_gateway import launch_gateway

        if SparkContext._active_spark_context is None:
            gateway = launch_gateway()
            jvm = gateway.jvm
            jsc = jvm.org.apache.spark.api.java.JavaSparkContext.fromSparkContext(
                jvm.org.apache.spark.SparkContext.getOrCreate()
            )
            SparkContext(gateway=gateway, jsc=jsc)
    return SparkSession.builder.getOrCreate()


class LazySpark:
    """Stands for ``spark`` (or ``sc``) until first used; then the session is made and the names are rebound."""

    _lock = threading.Lock()

    def __init__(self, namespace, attribute):
        self._namespace, self._attribute = namespace, attribute

    def _real(self):
        with LazySpark._lock:
            session = create_session()
            bind(self._namespace, session)
        return session.sparkContext if self._attribute == "sc" else session

    def __getattr__(self, name):
        return getattr(self._real(), name)

    def __repr__(self):
        return "<Spark session, created on first use (GP_SPARK_INIT_MODE=lazy)>"


def bind(namespace, session):
    """Put the session and its context into the user's namespace, replacing lazy stand-ins only."""
    for name, value in (("spark", session), ("sc", session.sparkContext)):
        if name not in namespace or isinstance(namespace[name], LazySpark):
            namespace[name] = value


def cancel_on_interrupt(shell):
    from py4j.protocol import Py4JNetworkError

    def handler(shell, etype, value, tb, tb_offset=None):
        from pyspark import SparkContext

        sc = SparkContext._active_spark_context
        if sc is not None:
            threading.Thread(target=sc.cancelAllJobs, daemon=True).start()
        return shell.showtraceback((etype, value, tb), tb_offset=tb_offset)

    shell.set_custom_exc((KeyboardInterrupt, Py4JNetworkError), handler)


def main(argv):
    mode = os.environ.get("GP_SPARK_INIT_MODE", "lazy").strip().lower()
    if mode not in MODES:
        sys.exit("GP_SPARK_INIT_MODE=" + repr(mode) + " is not one of lazy, eager, none")
    session = None
    if mode != "none" and not under_spark_submit():
        prepare(os.environ)
    if mode == "eager":
        session = create_session()  # before the kernel binds its ports: the launch waits for the session
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize(argv)
    namespace = app.shell.user_ns
    if session is not None:
        bind(namespace, session)
    elif mode == "lazy":
        namespace["spark"], namespace["sc"] = LazySpark(namespace, "spark"), LazySpark(namespace, "sc")
    if mode != "none":
        cancel_on_interrupt(app.shell)
    app.start()


if __name__ == "__main__":
    main(sys.argv[1:])
