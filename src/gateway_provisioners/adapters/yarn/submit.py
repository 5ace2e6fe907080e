"""How a launch becomes a YARN application: the REST submission body, or the spark-submit / dask-yarn command line.

Each starts ``gp_yarn_bootstrap.py`` (in the application master, or in dask-yarn's client container), which starts
the agent, which starts the kernel. Each gives the application the library's tag, a kernel tag and a unique
per-launch tag (the identity the poller matches on), a single attempt (a second AM attempt would start a second
kernel) and the kernel's queue.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...agent import agent_path
from ...core.errors import ConfigurationError

BOOTSTRAP = Path(__file__).with_name("gp_yarn_bootstrap.py")
APPLICATION_MASTER = Path(__file__).with_name("GpYarnAm.java")
#: Where the AM finds Hadoop's jars on a node: Hadoop's default ``yarn.application.classpath`` (the NodeManager
#: exports these variables into every container). A distribution with another layout sets its own (am_classpath).
DEFAULT_AM_CLASSPATH = ":".join(
    [
        "$HADOOP_CONF_DIR",
        "$HADOOP_COMMON_HOME/share/hadoop/common/*",
        "$HADOOP_COMMON_HOME/share/hadoop/common/lib/*",
        "$HADOOP_HDFS_HOME/share/hadoop/hdfs/*",
        "$HADOOP_HDFS_HOME/share/hadoop/hdfs/lib/*",
        "$HADOOP_YARN_HOME/share/hadoop/yarn/*",
        "$HADOOP_YARN_HOME/share/hadoop/yarn/lib/*",
    ]
)
#: Application masters of REST submission: our small Java AM (registers and heartbeats), or the agent itself
#: (never registers: the RM expires it after yarn.am.liveness-monitor.expiry-interval-ms).
AM_JAVA, AM_AGENT = "java", "agent"
APPLICATION_TYPE = "GATEWAY-PROVISIONERS"
PARAMS_FILE = "gp-launch.json"
DASK_SCRIPT = "gp_dask_kernel.py"
_MEMORY = re.compile(r"(\d+)\s*([kmgt]?)b?", re.I)


@dataclass
class Application:
    """What to ask YARN for, independent of the submission path."""

    kernel_id: str
    name: str
    tags: list[str]
    queue: str = "default"
    user: str = ""
    memory_mb: int = 1024
    vcores: int = 1
    python: str = "python3"
    params: dict[str, Any] = field(default_factory=dict, repr=False)  # the agent's launch parameters (token inside)


def memory_mb(value: str | int | None, default: int = 1024) -> int:
    """``"2g"`` → 2048, ``"512m"`` / ``"512"`` → 512 (the older package crashed on a suffix)."""
    if value in (None, ""):
        return default
    match = _MEMORY.fullmatch(str(value).strip())
    if not match:
        raise ConfigurationError(f"memory {value!r} is not a size like 512m or 2g")
    number, unit = int(match.group(1)), match.group(2).lower()
    return max(1, {"k": number // 1024, "": number, "m": number, "g": number * 1024, "t": number * 1024**2}[unit])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def rest_body(
    app: Application, app_id: str, *, application_master: str = AM_JAVA, am_classpath: str = DEFAULT_AM_CLASSPATH
) -> dict[str, Any]:
    """The ``POST /ws/v1/cluster/apps`` body whose AM container runs the agent.

    With ``application_master="java"`` the container's process is ``GpYarnAm.java`` (run from source by the node's
    Java, with Hadoop's jars from ``am_classpath``): it registers with the RM, heartbeats, and runs the agent as its
    child. With ``"agent"`` the agent is the container's process and never registers.

    YARN writes environment values into the container's launch script inside double quotes without escaping, so
    the JSON parameters and the sources travel base64-encoded; the AM command only decodes them. The classpath goes
    in ``CLASSPATH`` (the launch script would glob a ``dir/*`` given on the command line).
    """
    environment = {
        "GP_YARN_BOOTSTRAP": _b64(BOOTSTRAP.read_bytes()),
        "GP_YARN_AGENT_B64": _b64(zlib.compress(agent_path().read_bytes(), 9)),
        "GP_YARN_PARAMS_B64": _b64(json.dumps(app.params).encode()),
    }
    logs = "1><LOG_DIR>/stdout 2><LOG_DIR>/stderr"
    command = "echo $GP_YARN_BOOTSTRAP | base64 -d > gp_yarn_bootstrap.py && "
    if application_master == AM_JAVA:
        environment["GP_YARN_AM"] = _b64(APPLICATION_MASTER.read_bytes())
        environment["CLASSPATH"] = am_classpath
        command += (
            "echo $GP_YARN_AM | base64 -d > GpYarnAm.java && "
            "exec {{JAVA_HOME}}/bin/java -Xmx256m -XX:TieredStopAtLevel=1 GpYarnAm.java "
            f"{app.python} gp_yarn_bootstrap.py {logs}"
        )
    else:
        command += f"exec {app.python} gp_yarn_bootstrap.py {logs}"
    return {
        "application-id": app_id,
        "application-name": app.name,
        "queue": app.queue,
        "application-type": APPLICATION_TYPE,
        "application-tags": {"tag": list(app.tags)},
        "am-container-spec": {
            "commands": {"command": command},
            "environment": {"entry": [{"key": k, "value": v} for k, v in environment.items()]},
        },
        "unmanaged-AM": False,
        "max-app-attempts": 1,
        "keep-containers-across-application-attempts": False,
        "resource": {"memory": app.memory_mb, "vCores": app.vcores},
    }


def spark_submit_argv(
    app: Application,
    submit_command: list[str],
    params_file: str,
    *,
    proxy_user: str | None = None,
    extra_options: list[str] = (),  # type: ignore[assignment]
    driver_memory: str | None = None,
    executor_memory: str | None = None,
    driver_cores: int | None = None,
) -> list[str]:
    """``spark-submit --master yarn --deploy-mode cluster ...`` running the bootstrap as the driver (in the AM).

    The parameters file (token inside, mode 0600 on the server) and the agent are localized into the driver's
    working directory with ``--files``; nothing secret is in a ``--conf`` value or the command line.
    """
    argv = list(submit_command)
    if "--master" not in argv:
        argv += ["--master", "yarn"]
    if "--deploy-mode" not in argv:
        argv += ["--deploy-mode", "cluster"]
    argv += [
        "--name", app.name,
        "--queue", app.queue,
        "--conf", f"spark.yarn.tags={','.join(app.tags)}",
        "--conf", "spark.yarn.submit.waitAppCompletion=false",
        "--conf", "spark.yarn.maxAppAttempts=1",
        "--conf", f"spark.yarn.appMasterEnv.PYSPARK_PYTHON={app.python}",
        "--files", f"{agent_path()},{params_file}#{PARAMS_FILE}",
    ]  # fmt: skip
    if proxy_user:
        argv += ["--proxy-user", proxy_user]
    if driver_memory:
        argv += ["--driver-memory", driver_memory]
    if executor_memory:
        argv += ["--executor-memory", executor_memory]
    if driver_cores:
        argv += ["--driver-cores", str(driver_cores)]
    argv += list(extra_options)
    argv += [str(BOOTSTRAP), "--params-file", PARAMS_FILE, "--agent", agent_path().name]
    return argv


def is_dask_yarn(submit_command: list[str]) -> bool:
    """Whether the submit command is dask-yarn's CLI (``dask-yarn`` or ``/path/to/dask-yarn``, ``submit`` optional)."""
    return bool(submit_command) and Path(submit_command[0]).name == "dask-yarn"


def dask_script(app: Application) -> str:
    """A self-contained Python script for ``dask-yarn submit``: the bootstrap with the agent and the parameters.

    ``dask-yarn submit`` localizes only its script (into the dask.client container, through the application's
    staging folder), and passes ``--client-env`` values on the command line, where the token must not be. So the
    parameters travel inside the script, which the server writes with mode 0600 and which deletes its link in the
    container before anything else runs; the bootstrap then takes them out of the environment the kernel inherits.
    """
    params = _b64(json.dumps(app.params).encode())
    agent = _b64(zlib.compress(agent_path().read_bytes(), 9))
    bootstrap = _b64(zlib.compress(BOOTSTRAP.read_bytes(), 9))
    return (
        '"""gateway-provisioners: start the kernel\'s agent in this dask-yarn client container (one launch)."""\n'
        "import base64, os, zlib\n"
        "try:\n"
        "    os.remove(os.path.abspath(__file__))  # the launch token is in this file\n"
        "except OSError:\n"
        "    pass\n"
        f'os.environ["GP_YARN_PARAMS_B64"] = "{params}"\n'
        f'os.environ["GP_YARN_AGENT_B64"] = "{agent}"\n'
        f'exec(compile(zlib.decompress(base64.b64decode("{bootstrap}")), "gp_yarn_bootstrap.py", "exec"))\n'
    )


def dask_yarn_argv(
    app: Application,
    submit_command: list[str],
    script: str,
    *,
    extra_options: list[str] = (),  # type: ignore[assignment]
) -> list[str]:
    """``dask-yarn submit --name N --queue Q --tags T --environment python://PY ... script``.

    The script runs in dask-yarn's ``dask.client`` container (next to the scheduler it starts), with the Python of
    ``--environment``: ``python://<remote_python>`` unless the command or the options give one (an archived
    conda/venv environment, ``venv:///...``). Impersonation is dask's ``yarn.user`` setting (``DASK_YARN__USER``
    in the submitter's environment), as the CLI has no option for it. The skein application keeps one attempt.
    """
    argv = list(submit_command)
    if "submit" not in argv[1:]:
        argv.append("submit")
    given = [*argv, *extra_options]
    argv += [
        "--name", app.name,
        "--queue", app.queue,
        "--tags", ",".join(app.tags),
        "--client-memory", f"{app.memory_mb} MiB",
        "--client-vcores", str(app.vcores),
    ]  # fmt: skip
    if "--environment" not in given:
        argv += ["--environment", f"python://{app.python}"]
    argv += list(extra_options)
    argv.append(script)
    return argv
