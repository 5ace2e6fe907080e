"""The dask-yarn path: ``dask-yarn submit`` (the stand-in on PATH) submits the agent as the application's script."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners.core.errors import LaunchError
from gateway_provisioners.core.handshake import encode_token
from gateway_provisioners.provisioners.yarn import YarnProvisioner

from ...support.kernels import run_code
from .conftest import ENDED_BY_SHUTDOWN, write_yarn_spec
from .rm_emulator import RMServer, RMState

pytestmark = pytest.mark.integration


async def test_dask_yarn_submit_path(
    jupyter_path: Path, rm: RMServer, rm_state: RMState, dask_yarn: Path, tmp_path: Path
) -> None:
    write_yarn_spec(
        jupyter_path, "yarn-dask", rm.url, submit_command=["dask-yarn", "submit"], impersonation_enabled=True
    )
    km = AsyncKernelManager(kernel_name="yarn-dask")
    await km.start_kernel(env={**os.environ, "KERNEL_USERNAME": "alice", "KERNEL_QUEUE": "dask"})
    try:
        assert isinstance(km.provisioner, YarnProvisioner) and km.provisioner.kernel is not None
        kernel = km.provisioner.kernel
        assert kernel.handle is not None and kernel.spec is not None
        app_id = str(kernel.handle.data["app_id"])
        app = rm_state.apps[app_id]
        # dask-yarn carried the identity: name, queue, the library's, the kernel's and the launch's tags; one attempt.
        assert app["applicationType"] == "skein" and app["state"] == "RUNNING"
        assert app["user"] == "alice", "impersonation: DASK_YARN__USER (dask's yarn.user)"
        assert app["name"] == km.kernel_id and app["queue"] == "dask"
        tags = app["applicationTags"].split(",")
        assert f"gp-kernel-{km.kernel_id}" in tags and kernel.handle.data["launch_tag"] in tags
        assert rm_state.specs[app_id]["max-app-attempts"] == 1

        # The token never reached the command line: it travelled inside the (0600, since removed) script.
        argv = json.loads((tmp_path / "tmp" / "dask-yarn-argv.json").read_text())
        assert argv[0] == "submit" and "--client-env" not in argv
        token = encode_token(kernel.spec.token)
        assert not any(token in arg for arg in argv)
        assert argv[argv.index("--environment") + 1].startswith("python://")
        assert not os.path.exists(argv[-1]), "the server's copy of the script is removed once submitted"

        content, out = await run_code(
            km,
            "import os; print(os.environ.get('KERNEL_USERNAME'), "
            "any(k.startswith('GP_YARN_') or k == 'GP_LAUNCH_PARAMS' for k in os.environ))",
        )
        assert content["status"] == "ok" and out.strip() == "alice False"
        # The script deleted its link in the container before running the agent.
        assert not list((rm_state.workdir / "nm").glob("*/gp_dask_kernel.py"))
    finally:
        await km.shutdown_kernel(now=True)
    assert rm_state.apps[app_id]["state"] in ENDED_BY_SHUTDOWN


async def test_dask_yarn_failure_reports_its_output(
    jupyter_path: Path, rm: RMServer, rm_state: RMState, dask_yarn: Path
) -> None:
    # An option dask-yarn does not know (here a Spark option) fails the submission with argparse's message.
    write_yarn_spec(
        jupyter_path, "yarn-dask-bad", rm.url, submit_command=["dask-yarn", "submit"], spark_opts="--num-executors 2"
    )
    km = AsyncKernelManager(kernel_name="yarn-dask-bad")
    with pytest.raises(LaunchError) as caught:
        await km.start_kernel()
    assert "the submit command failed with exit code 2" in str(caught.value)
    assert "unrecognized arguments: --num-executors" in caught.value.details()
    assert not rm_state.apps
