"""Regenerate the settings tables of docs/configuration.md from the provisioners' own declarations.

    python scripts/config_docs.py           rewrite the generated tables in place
    python scripts/config_docs.py --check   exit 1, naming the stale tables, when the file is not current

Each table sits between ``<!-- generated: NAME -->`` and ``<!-- end generated -->``; the prose around it is written by
hand. tests/unit/test_configuration_docs.py runs the check, so a setting changed in code without the docs fails CI.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from gateway_provisioners.provisioners.base import RemoteProvisionerBase
from gateway_provisioners.provisioners.custom_resource import CustomResourceProvisioner, SparkOperatorProvisioner
from gateway_provisioners.provisioners.distributed import DistributedProvisioner
from gateway_provisioners.provisioners.docker import DockerProvisioner
from gateway_provisioners.provisioners.kubernetes import KubernetesProvisioner
from gateway_provisioners.provisioners.local import LocalAgentProvisioner
from gateway_provisioners.provisioners.settings import declared, table
from gateway_provisioners.provisioners.yarn import YarnProvisioner
from gateway_provisioners.server.app import GatewayProvisionersServer

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
# Provisioners (and the server extension) in the order of the docs, with the name the environment table uses for them.
PROVISIONERS: list[tuple[type, str]] = [
    (RemoteProvisionerBase, "all"),
    (LocalAgentProvisioner, "local"),
    (DistributedProvisioner, "distributed"),
    (DockerProvisioner, "Docker, Swarm"),
    (KubernetesProvisioner, "Kubernetes"),
    (CustomResourceProvisioner, "custom resource"),
    (SparkOperatorProvisioner, "Spark operator"),
    (YarnProvisioner, "YARN"),
    (GatewayProvisionersServer, "server extension"),
]
# Variables read outside the settings (how a default is computed), documented with them.
OTHER_VARIABLES = [
    ("GP_PROHIBITED_LOCAL_IPS", "addresses `response_ip`'s default must not use (comma-separated regular expressions)",
     "all"),
    ("DOCKER_HOST", "the engine when `docker_url` is empty, and `host_ip`'s default", "Docker, Swarm"),
]  # fmt: skip


def environment_table() -> str:
    """Every server environment variable a setting reads: which setting, for which provisioners."""
    rows: dict[str, tuple[list[str], list[str]]] = {}
    for cls, label in PROVISIONERS:
        for name, trait in declared(cls).items():
            for variable in trait.metadata["rule"].env:
                settings, users = rows.setdefault(variable, ([], []))
                if f"`{name}`" not in settings:
                    settings.append(f"`{name}`")
                if label not in users:
                    users.append(label)
    lines = ["| variable | sets | provisioners |", "| --- | --- | --- |"]
    lines += [f"| `{var}` | {', '.join(s)} | {', '.join(u)} |" for var, (s, u) in rows.items()]
    lines += [f"| `{var}` | {what} | {users} |" for var, what, users in OTHER_VARIABLES]
    return "\n".join(lines)


GENERATORS: dict[str, Callable[[], str]] = {cls.__name__: (lambda cls=cls: table(cls)) for cls, _ in PROVISIONERS}
GENERATORS["environment"] = environment_table

BLOCK = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end generated -->)", re.S)


def render(text: str) -> tuple[str, list[str]]:
    """``text`` with every generated block replaced, and the names of the blocks that changed."""
    changed: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in GENERATORS:
            raise SystemExit(f"{DOC}: unknown generated block {name!r} (known: {', '.join(GENERATORS)})")
        body = GENERATORS[name]() + "\n"
        if body != match.group(3):
            changed.append(name)
        return match.group(1) + body + match.group(4)

    rendered = BLOCK.sub(replace, text)
    missing = sorted(set(GENERATORS) - {m.group(2) for m in BLOCK.finditer(text)})
    if missing:
        raise SystemExit(f"{DOC}: no generated block for {', '.join(missing)}")
    return rendered, changed


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    rendered, changed = render(text)
    if "--check" in argv:
        if changed:
            print(f"{DOC} is stale in: {', '.join(changed)}; run python scripts/config_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(rendered)
    print(f"{DOC}: {len(changed)} table(s) rewritten" + (f" ({', '.join(changed)})" if changed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
