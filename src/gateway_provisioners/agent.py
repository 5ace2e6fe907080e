"""Where the kernel-side agent's files are: inside the installed wheel, or in a source checkout."""

from __future__ import annotations

from pathlib import Path

AGENT_SCRIPT = "gp_agent.py"
SPARK_KERNEL_SCRIPT = "gp_spark_kernel.py"  # a Python kernel that is a Spark driver (docs/kubernetes.md, "Spark")


def launchers_dir() -> Path:
    """The folder holding ``gp_agent.py`` (shipped in the wheel as ``gateway_provisioners/launchers``)."""
    installed = Path(__file__).parent / "launchers"
    if (installed / AGENT_SCRIPT).exists():
        return installed
    checkout = Path(__file__).resolve().parents[2] / "launchers"  # src/gateway_provisioners/ → repository root
    if (checkout / AGENT_SCRIPT).exists():
        return checkout
    raise FileNotFoundError(f"{AGENT_SCRIPT} is missing from this installation of gateway-provisioners")


def agent_path() -> Path:
    return launchers_dir() / AGENT_SCRIPT


def spark_kernel_path() -> Path:
    return launchers_dir() / SPARK_KERNEL_SCRIPT
