"""A real AsyncKernelManager drives real ipykernels through yarn-provisioner against the RM emulator, for what the
real YARN of test_real_yarn.py cannot be made to do on demand: an application that registers after the launch
deadline, a submit command that fails, a refused callback address, impersonation, a failover between two RMs."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from gateway_provisioners.core.errors import LaunchError, LaunchTimeout
from gateway_provisioners.provisioners.yarn import YarnProvisioner

from ...support.kernels import run_code
from .conftest import ENDED_BY_SHUTDOWN, write_yarn_spec
from .rm_emulator import RMServer, RMState

pytestmark = pytest.mark.integration


def app_of(km: AsyncKernelManager) -> str:
    assert isinstance(km.provisioner, YarnProvisioner) and km.provisioner.kernel is not None
    handle = km.provisioner.kernel.handle
    assert handle is not None
    return str(handle.data["app_id"])


async def final(state: RMState, app_id: str, timeout: float = 20) -> str:
    """Wait (off the event loop: the poller runs on it) until the application is over; its final state."""
    over = await asyncio.to_thread(
        state.wait_for, lambda: state.apps[app_id]["state"] in ("FINISHED", "FAILED", "KILLED"), timeout
    )
    assert over, f"application {app_id} still {state.apps[app_id]['state']}"
    return str(state.apps[app_id]["state"])


async def test_spark_submit_path_with_impersonation(
    jupyter_path: Path, rm: RMServer, rm_state: RMState, spark_submit: Path, tmp_path: Path
) -> None:
    write_yarn_spec(jupyter_path, "yarn-spark", rm.url, submit_command=["spark-submit"], impersonation_enabled=True)
    km = AsyncKernelManager(kernel_name="yarn-spark")
    await km.start_kernel(env={**os.environ, "KERNEL_USERNAME": "alice", "KERNEL_QUEUE": "spark"})
    try:
        app_id = app_of(km)
        app = rm_state.apps[app_id]
        assert app["applicationType"] == "SPARK" and app["state"] == "RUNNING"
        assert app["user"] == "alice", "impersonation: --proxy-user KERNEL_USERNAME"
        assert app["queue"] == "spark" and f"gp-kernel-{km.kernel_id}" in app["applicationTags"]
        assert rm_state.specs[app_id]["max-app-attempts"] == 1
        content, out = await run_code(
            km, "import os; print(os.environ.get('KERNEL_USERNAME'), 'GP_LAUNCH_PARAMS' in os.environ)"
        )
        assert content["status"] == "ok" and out.strip() == "alice False"
    finally:
        await km.shutdown_kernel(now=True)
    assert rm_state.apps[app_id]["state"] in ENDED_BY_SHUTDOWN


async def test_timeout_kills_an_application_that_appears_late(
    jupyter_path: Path, rm: RMServer, rm_state: RMState, spark_submit: Path
) -> None:
    write_yarn_spec(jupyter_path, "yarn-late", rm.url, submit_command=["spark-submit"], launch_timeout=2,
                    spark_opts="--conf spark.fake.registerDelay=3")  # fmt: skip
    km = AsyncKernelManager(kernel_name="yarn-late")
    with pytest.raises(LaunchTimeout):
        await km.start_kernel()
    assert not rm_state.apps, "the application is registered only after the timeout"
    # spark-submit registers it a second later: the shared poller must find it by its launch tag and kill it.
    assert await asyncio.to_thread(rm_state.wait_for, lambda: len(rm_state.apps) == 1, 10)
    (app_id,) = list(rm_state.apps)
    assert await final(rm_state, app_id) == "KILLED"


async def test_submit_command_failure_reports_its_output(jupyter_path: Path, rm: RMServer, spark_submit: Path) -> None:
    write_yarn_spec(jupyter_path, "yarn-badsubmit", rm.url, submit_command=["spark-submit"],
                    spark_opts="--conf 'spark.fake.fail=Queue nosuch does not exist'")  # fmt: skip
    km = AsyncKernelManager(kernel_name="yarn-badsubmit")
    started = time.monotonic()
    with pytest.raises(LaunchError) as caught:
        await km.start_kernel()
    assert time.monotonic() - started < 10
    assert "exit code 1" in str(caught.value) and "Queue nosuch does not exist" in caught.value.details()


async def test_no_callback_names_the_address_and_the_agent_log(
    jupyter_path: Path, rm: RMServer, rm_state: RMState
) -> None:
    from gateway_provisioners.listener import shared_listener

    # The address this server advertises refuses connections (a firewall, a wrong response_ip): the agent gives up
    # and its application ends. The error must come at once and name the address the agent was told to reach,
    # with the agent's own log lines from the NodeManager.
    listener = await shared_listener(ip="127.0.0.1", port=0)
    listener.close()
    await listener.wait_closed()
    write_yarn_spec(jupyter_path, "yarn-nocb", rm.url, launch_timeout=20)
    km = AsyncKernelManager(kernel_name="yarn-nocb")
    started = time.monotonic()
    with pytest.raises(LaunchError) as caught:
        await km.start_kernel()
    assert time.monotonic() - started < 15
    details = caught.value.details()
    assert f"the agent was told to call back to {listener.address}" in details
    assert f"cannot deliver the connection info to {listener.address}" in details, details
    (app_id,) = list(rm_state.apps)
    assert await final(rm_state, app_id) in ("FAILED", "KILLED")


async def test_failover_between_two_rms_mid_life(jupyter_path: Path, rm_state: RMState) -> None:
    rm1, rm2 = RMServer(rm_state), RMServer(rm_state, role="STANDBY")
    try:
        write_yarn_spec(jupyter_path, "yarn-ha", rm1.url, alt_yarn_endpoint=rm2.url)
        km = AsyncKernelManager(kernel_name="yarn-ha")
        await km.start_kernel()
        try:
            app_id = app_of(km)
            _, out = await run_code(km, "print('before')")
            assert out.strip() == "before"
            rm1.stop()  # the active RM goes away; the standby becomes active
            rm2.role = "ACTIVE"
            backend = km.provisioner.kernel.backend  # type: ignore[union-attr]
            polls = rm2.requests[("GET", "/ws/v1/cluster/apps")]
            assert await asyncio.to_thread(
                rm_state.wait_for, lambda: rm2.requests[("GET", "/ws/v1/cluster/apps")] > polls, 10
            ), "the shared poller did not move to the new active RM"
            assert backend.client.active_endpoint == rm2.url and backend.client.failovers == 1
            _, out = await run_code(km, "print('after')")
            assert out.strip() == "after"
        finally:
            await km.shutdown_kernel(now=True)
        assert rm_state.apps[app_id]["state"] in ENDED_BY_SHUTDOWN
        assert rm2.requests[("PUT", f"/ws/v1/cluster/apps/{app_id}/state")] >= 1
    finally:
        rm2.stop()
