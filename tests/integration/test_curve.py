"""CurveZMQ: under the kernel manager's ``transport_encryption`` policy, the kernel's channels are encrypted and only
clients holding the kernel's public key are answered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager

from ..conftest import write_kernel_spec
from ..support.kernels import run_code, shell_answers

pytestmark = pytest.mark.integration

CONNECTION_FILE_KEY = (
    "import json, ipykernel; print(json.load(open(ipykernel.get_connection_file()))['curve_publickey'])"
)


async def test_required_encrypts_the_channels_and_restart_keeps_the_keys(jupyter_path: Path) -> None:
    write_kernel_spec(jupyter_path, "gp-curve", metadata={"supported_encryption": ["curve"]})
    km = AsyncKernelManager(kernel_name="gp-curve", transport_encryption="required")
    await km.start_kernel()
    try:
        info = km.get_connection_info()
        public = info["curve_publickey"]
        assert isinstance(public, str) and len(public) == 40 and len(info["curve_secretkey"]) == 40
        # The agent wrote the server's keys into the kernel's connection file; the kernel serves with them.
        _, out = await run_code(km, CONNECTION_FILE_KEY)
        assert out.strip() == public
        # The same request is answered on a Curve socket that knows the kernel's public key, and not on a plain one.
        assert await shell_answers(info, curve=True, timeout=30)
        assert not await shell_answers(info, curve=False, timeout=2)

        await km.restart_kernel(now=True)  # in place: same agent, same connection file, same keys
        assert km.get_connection_info()["curve_publickey"] == public
        _, out = await run_code(km, CONNECTION_FILE_KEY)
        assert out.strip() == public
        restored = await km.provisioner.get_provisioner_info()  # type: ignore[union-attr]
        assert restored["connection_info"]["curve_publickey"] == public
    finally:
        await km.shutdown_kernel(now=True)


@pytest.mark.parametrize(("declared", "encrypted"), [(["curve"], True), ("curve", True), (None, False)])
async def test_auto_follows_the_kernel_spec_declaration(jupyter_path: Path, declared: Any, encrypted: bool) -> None:
    metadata = {"supported_encryption": declared} if declared is not None else {}
    write_kernel_spec(jupyter_path, "gp-curve-auto", metadata=metadata)
    km = AsyncKernelManager(kernel_name="gp-curve-auto", transport_encryption="auto")
    await km.start_kernel()
    try:
        assert ("curve_publickey" in km.get_connection_info()) is encrypted
        content, out = await run_code(km, "print(6 * 7)")
        assert content["status"] == "ok" and out.strip() == "42"
    finally:
        await km.shutdown_kernel(now=True)
