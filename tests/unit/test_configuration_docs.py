"""docs/configuration.md's settings tables are what the code declares, and misspelled settings are refused."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import TraitError

from gateway_provisioners.provisioners.distributed import DistributedProvisioner
from gateway_provisioners.provisioners.docker import DockerProvisioner, DockerSwarmProvisioner
from gateway_provisioners.provisioners.kubernetes import KubernetesProvisioner
from gateway_provisioners.provisioners.local import LocalAgentProvisioner
from gateway_provisioners.provisioners.settings import declared
from gateway_provisioners.provisioners.yarn import YarnProvisioner

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "config_docs.py"


def load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("config_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_settings_tables_are_current() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_stale_table_is_detected() -> None:
    generator = load_generator()
    text = generator.DOC.read_text()
    stale = text.replace("| `launch_timeout` | number | `30` |", "| `launch_timeout` | number | `60` |")
    assert stale != text, "the base table no longer shows launch_timeout's default"
    _, changed = generator.render(stale)
    assert changed == ["RemoteProvisionerBase"]


@pytest.mark.parametrize(
    "cls",
    [LocalAgentProvisioner, DistributedProvisioner, DockerProvisioner, DockerSwarmProvisioner, KubernetesProvisioner,
     YarnProvisioner],
)  # fmt: skip
def test_every_configurable_trait_is_a_declared_setting(cls: type) -> None:
    ours = set(cls.class_trait_names(config=True)) - set(KernelProvisionerBase.class_trait_names())
    undeclared = ours - set(declared(cls, own_only=False))
    assert not undeclared, f"{cls.__name__} settings without setting(...): {sorted(undeclared)}"


def make(cls: type, **config: object) -> object:
    spec = KernelSpec(argv=["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"], display_name="t")
    return cls(kernel_id="k1", kernel_spec=spec, parent=None, **config)


def test_a_misspelled_setting_is_refused_with_the_nearest_name() -> None:
    with pytest.raises(TraitError) as raised:
        make(LocalAgentProvisioner, launch_timout=60)
    message = str(raised.value)
    assert "'launch_timout' (did you mean 'launch_timeout'?)" in message and "\n" not in message


def test_a_configured_value_out_of_bounds_names_the_setting() -> None:
    with pytest.raises(TraitError, match=r"launch_timeout='0\.5' is below the minimum 1"):
        make(LocalAgentProvisioner, launch_timeout=0.5)
    with pytest.raises(TraitError, match="image_pull_policy='sometimes' is not one of never, missing, always"):
        make(DockerProvisioner, image_pull_policy="sometimes")
