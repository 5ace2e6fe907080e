"""jupyter-gp-migrate on kernel specs written by the older package's own CLIs (gateway_provisioners 0.5.0 from PyPI).

Each converted spec must load as jupyter_client loads it (the provisioner is created from its entry point with the
spec's settings, so a wrong setting name fails) and hold no placeholder of the older shape; what cannot be converted
is refused in one line and left byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import KernelProvisionerFactory

from gateway_provisioners.provisioners.legacy import legacy_shape
from gateway_provisioners_cli.kernelspec import unfilled
from tests.support.older_package import older_spec

pytestmark = pytest.mark.integration

MIGRATE = str(Path(sys.executable).parent / "jupyter-gp-migrate")

CONVERTIBLE = {
    "ssh_py": ("jupyter-ssh-spec", ["--remote-hosts", "h1", "--remote-hosts", "h2", "--unauthorized-users", "root",
                                    "--unauthorized-users", "bob", "--port-range", "40000..41000"]),
    "ssh_r": ("jupyter-ssh-spec", ["--remote-hosts", "h1", "--authorized-users", "alice"]),
    "k8s_py": ("jupyter-k8s-spec", ["--image-name", "reg/kernel-py:1", "--launch-timeout", "90"]),
    "docker_py": ("jupyter-docker-spec", ["--image-name", "reg/kernel-py:1"]),
    "swarm_py": ("jupyter-docker-spec", ["--image-name", "reg/kernel-py:1", "--swarm"]),
    "yarn_spark": ("jupyter-yarn-spec", ["--python-root", "/opt/conda", "--extra-spark-opts", "--num-executors 3",
                                         "--ipykernel-subclass-name", "mypkg.MyKernel"]),
    "yarn_dask": ("jupyter-yarn-spec", ["--dask", "--python-root", "/opt/conda", "--extra-dask-opts",
                                        "--worker-count 2"]),
    "ssh_spark": ("jupyter-ssh-spec", ["--spark", "--remote-hosts", "h1", "--spark-master", "yarn"]),
}  # fmt: skip
REFUSED = {
    "k8s_spark": (["jupyter-k8s-spec", "--spark", "--image-name", "reg/spark:1"], "jupyter-k8s-spec install --spark"),
    "k8s_crd": (["jupyter-k8s-spec", "--spark", "--crd"], "spark-operator-provisioner: written anew"),
    # The older jupyter-yarn-spec with --yarn-endpoint leaves ${…} template variables (its install defect).
    "yarn_broken": (["jupyter-yarn-spec", "--yarn-endpoint", "http://rm:8088"], "were never filled in"),
}


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def older_specs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp("older")
    for name, (cli, args) in CONVERTIBLE.items():
        language = ["--language", "R"] if name == "ssh_r" else []
        if name == "ssh_r":
            # The older jupyter-ssh-spec cannot write R specs (it looks for kernel-launchers/r, the folder is R);
            # its Python spec with the R launcher is what its users wrote by hand, so build that from its files.
            continue
        older_spec(prefix, cli, "--kernel-name", name, *language, *args)
    for name, (args, _) in REFUSED.items():
        older_spec(prefix, args[0], "--kernel-name", name, *args[1:])
    kernels = prefix / "share" / "jupyter" / "kernels"
    _r_spec_from_python_spec(kernels)
    return kernels


def _r_spec_from_python_spec(kernels: Path) -> None:
    """An R spec as the older launcher layout has it: Rscript launch_IRkernel.R with the same arguments."""
    source = json.loads((kernels / "ssh_py" / "kernel.json").read_text())
    folder = kernels / "ssh_r"
    (folder / "scripts").mkdir(parents=True)
    (folder / "scripts" / "launch_IRkernel.R").write_text("# the older R launcher\n")
    args = [a for a in source["argv"][2:] if a not in ("--kernel-class-name", "ipykernel.ipkernel.IPythonKernel")]
    source["argv"] = ["Rscript", str(folder / "scripts" / "launch_IRkernel.R"), *args]
    source["language"], source["display_name"] = "R", "R SSH"
    source["metadata"]["kernel_provisioner"]["config"] = {"remote_hosts": ["h1"], "authorized_users": ["alice"]}
    (folder / "kernel.json").write_text(json.dumps(source))


def migrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MIGRATE, *args], capture_output=True, text=True, timeout=120)


async def load(kernels: Path, name: str) -> object:
    """The spec as jupyter_client loads it, and its provisioner built from the entry point with the spec's config."""
    spec = KernelSpecManager(kernel_dirs=[str(kernels)]).get_kernel_spec(name)
    manager = AsyncKernelManager(kernel_name=name)
    return KernelProvisionerFactory.instance().create_provisioner_instance(str(uuid.uuid4()), spec, manager)


async def test_every_older_cli_spec_converts_or_is_refused_in_one_line(older_specs: Path, tmp_path: Path) -> None:
    before = {folder.name: tree_digest(folder) for folder in older_specs.iterdir()}

    dry = migrate("--dry-run", str(older_specs))
    assert {folder.name: tree_digest(folder) for folder in older_specs.iterdir()} == before  # nothing written
    assert dry.returncode == 1  # some were refused
    assert "launch_ipykernel.py" in dry.stdout and '+    "ipykernel_launcher",' in dry.stdout

    run = migrate(str(older_specs))
    assert run.returncode == 1, run.stderr
    for name, (_, reason) in REFUSED.items():
        lines = [line for line in run.stderr.splitlines() if line.startswith(str(older_specs / name) + ":")]
        assert len(lines) == 1 and "refused" in lines[0] and reason in lines[0], run.stderr
        assert tree_digest(older_specs / name) == before[name]  # left untouched
    for name in CONVERTIBLE:
        assert f"{older_specs / name}: converted" in run.stdout, run.stdout + run.stderr
        spec = json.loads((older_specs / name / "kernel.json").read_text())
        # env values may keep ${VAR}: jupyter_client fills those in at launch, as it did for the older package.
        assert unfilled({k: v for k, v in spec.items() if k != "env"}) == [], spec
        assert legacy_shape(spec["argv"]) is None, spec
        assert (older_specs / name / "pre-migrate" / "kernel.json").is_file()
        provisioner = await load(older_specs, name)
        assert type(provisioner).__module__.startswith("gateway_provisioners.provisioners")

    def config(name: str) -> dict:
        return json.loads((older_specs / name / "kernel.json").read_text())["metadata"]["kernel_provisioner"]["config"]

    ssh = json.loads((older_specs / "ssh_py" / "kernel.json").read_text())
    assert ssh["argv"] == ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert config("ssh_py")["remote_hosts"] == ["h1", "h2"]
    assert config("ssh_py")["unauthorized_users"] == ["bob", "root"]
    assert config("ssh_py")["port_range"] == "40000..41000"
    assert json.loads((older_specs / "ssh_r" / "kernel.json").read_text())["argv"][0] == "R"
    assert config("k8s_py")["image_name"] == "reg/kernel-py:1" and config("k8s_py")["launch_timeout"] == 90
    assert "extra_pod_config" not in config("k8s_py")  # the shipped older template: nothing to carry over
    spark = json.loads((older_specs / "yarn_spark" / "kernel.json").read_text())
    assert spark["argv"][0] == "/opt/conda/bin/python"
    assert "--IPKernelApp.kernel_class=mypkg.MyKernel" in spark["argv"]
    assert any(part.startswith("--IPKernelApp.exec_lines=") for part in spark["argv"])  # --spark-init-mode lazy
    assert "SPARK_OPTS" not in spark["env"] and "LAUNCH_OPTS" not in spark["env"]
    assert config("yarn_spark")["spark_opts"] == "--num-executors 3"
    assert config("yarn_spark")["submit_command"][0].endswith("/bin/spark-submit")
    ssh_spark = json.loads((older_specs / "ssh_spark" / "kernel.json").read_text())
    assert ssh_spark["argv"][0] == "/opt/conda/bin/python"  # PYSPARK_PYTHON: the kernel is the Spark driver
    assert any(part.startswith("--IPKernelApp.exec_lines=") for part in ssh_spark["argv"])  # lazy
    assert ssh_spark["env"]["PYSPARK_SUBMIT_ARGS"] == "--master yarn pyspark-shell"
    assert "SPARK_OPTS" not in ssh_spark["env"] and ssh_spark["env"]["SPARK_HOME"] == "/opt/spark"
    assert config("yarn_dask")["submit_command"] == ["/opt/conda/bin/dask-yarn", "submit"]
    assert "--worker-count 2" in config("yarn_dask")["spark_opts"]
    assert "--name" not in config("yarn_dask")["spark_opts"]

    again = migrate(*(str(older_specs / name) for name in CONVERTIBLE))
    assert again.returncode == 0 and again.stdout.count("already of the current shape") == len(CONVERTIBLE)


CUSTOM_ADDITIONS = """\
    env:
    - name: TEAM
      value: "analytics"
"""


def test_custom_older_pod_template_becomes_extra_pod_config(tmp_path: Path) -> None:
    kernels = older_spec(tmp_path, "jupyter-k8s-spec", "--kernel-name", "k8s_custom", "--image-name", "reg/k:1")
    template = kernels / "k8s_custom" / "scripts" / "kernel-pod.yaml.j2"
    text = template.read_text()
    # What operators add to the older template: a node selector and an environment variable of their own.
    text = text.replace("  restartPolicy: Never\n", "  restartPolicy: Never\n  nodeSelector:\n    pool: kernels\n")
    text = text.replace("    env:\n", CUSTOM_ADDITIONS, 1)
    template.write_text(text)
    run = migrate(str(kernels / "k8s_custom"))
    assert run.returncode == 0, run.stderr
    config = json.loads((kernels / "k8s_custom" / "kernel.json").read_text())["metadata"]["kernel_provisioner"][
        "config"
    ]
    assert config["extra_pod_config"] == {
        "spec": {
            "nodeSelector": {"pool": "kernels"},
            "containers": [{"name": "kernel", "env": [{"name": "TEAM", "value": "analytics"}]}],
        }
    }


def test_older_pod_template_using_per_kernel_values_is_refused(tmp_path: Path) -> None:
    kernels = older_spec(tmp_path, "jupyter-k8s-spec", "--kernel-name", "k8s_user", "--image-name", "reg/k:1")
    template = kernels / "k8s_user" / "scripts" / "kernel-pod.yaml.j2"
    template.write_text(
        template.read_text().replace(
            "    component: kernel\n", '    component: kernel\n    owner: "{{ kernel_username }}"\n'
        )
    )
    before = tree_digest(kernels / "k8s_user")
    run = migrate(str(kernels / "k8s_user"))
    assert run.returncode == 1
    assert "per-kernel values (kernel_username)" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert tree_digest(kernels / "k8s_user") == before
