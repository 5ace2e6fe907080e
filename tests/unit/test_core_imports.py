"""The core is importable with the standard library and ``cryptography`` only.

Embedders and the agent's host need neither Jupyter nor any cluster SDK to use ``gateway_provisioners.core``; a stray
import of one of them would make every user install it. Checked in a fresh interpreter, so nothing the test run
itself imported can hide an import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gateway_provisioners.core

CORE_DIR = Path(gateway_provisioners.core.__file__).parent
CORE_MODULES = sorted(
    f"gateway_provisioners.core.{path.stem}" for path in CORE_DIR.glob("*.py") if path.stem != "__init__"
)
FORBIDDEN = {
    "jupyter_client",
    "jupyter_core",
    "traitlets",
    "zmq",
    "kubernetes",
    "docker",
    "asyncssh",
    "yarn_api_client",
    "tornado",
    "click",
    "jinja2",
    "ipykernel",
}
# cryptography's own modules: its package, its OpenSSL bindings and the cffi backend they load.
ALLOWED_THIRD_PARTY = {"gateway_provisioners", "cryptography", "_cffi_backend", "_openssl"}


def modules_after(imports: list[str]) -> set[str]:
    """``sys.modules`` of a fresh interpreter after importing ``imports``."""
    code = "import sys, json\n" + "".join(f"import {name}\n" for name in imports)
    code += "print(json.dumps(sorted(sys.modules)))\n"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_every_core_module_is_checked() -> None:
    expected = {
        "errors",
        "events",
        "lifecycle",
        "handshake",
        "control",
        "port_range",
        "launch",
        "backend",
        "broker",
        "kernel",
        "logsafe",
    }
    assert expected <= {name.rsplit(".", 1)[1] for name in CORE_MODULES}


def test_core_imports_only_stdlib_and_cryptography() -> None:
    at_startup = modules_after([])  # what the interpreter loads anyway (site hooks, __main__)
    modules = modules_after(CORE_MODULES)
    assert set(CORE_MODULES) <= modules, "the subprocess did not import the core"
    assert "cryptography" in modules
    names = top_level(modules)
    assert not names & FORBIDDEN, f"the core imports {sorted(names & FORBIDDEN)}"
    third_party = top_level(modules - at_startup) - set(sys.stdlib_module_names)
    assert third_party <= ALLOWED_THIRD_PARTY, f"the core imports {sorted(third_party - ALLOWED_THIRD_PARTY)}"


def test_package_root_imports_nothing_heavy() -> None:
    names = top_level(modules_after(["gateway_provisioners"]))
    assert "gateway_provisioners" in names
    assert not names & (FORBIDDEN | {"cryptography"})
