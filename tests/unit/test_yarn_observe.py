"""Application reports → observations, and the size parser (pure functions of the YARN adapter)."""

from __future__ import annotations

import pytest

from gateway_provisioners.adapters.yarn.observe import app_sort_key, observe, queue_full
from gateway_provisioners.adapters.yarn.submit import memory_mb
from gateway_provisioners.core.backend import PlatformState
from gateway_provisioners.core.errors import ConfigurationError, QueueFull

APP = {"id": "application_1_0001", "queue": "q", "diagnostics": "", "finalStatus": "UNDEFINED"}


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({"state": "SUBMITTED"}, PlatformState.PENDING),
        ({"state": "ACCEPTED"}, PlatformState.PENDING),
        ({"state": "ACCEPTED", "amHostHttpAddress": "node7:8042"}, PlatformState.STARTING),
        ({"state": "RUNNING", "amHostHttpAddress": "node7:8042"}, PlatformState.STARTING),
        ({"state": "FINISHED", "finalStatus": "SUCCEEDED"}, PlatformState.EXITED),
        ({"state": "FINISHED", "finalStatus": "FAILED"}, PlatformState.FAILED),
        ({"state": "KILLED", "finalStatus": "KILLED"}, PlatformState.FAILED),
        ({"state": "FAILED", "finalStatus": "FAILED", "diagnostics": "AM exited"}, PlatformState.FAILED),
    ],
)
def test_states(fields: dict, state: PlatformState) -> None:
    obs = observe({**APP, **fields}, callback="10.0.0.1:8877")
    assert obs.state is state
    if state is PlatformState.STARTING:
        assert obs.ip == "node7" and "10.0.0.1:8877" in obs.reason
    if state is PlatformState.FAILED:
        assert obs.error is not None and APP["id"] in str(obs.error)


def test_queue_full_names_queue_and_diagnostics() -> None:
    obs = queue_full({**APP, "state": "ACCEPTED", "diagnostics": "AM resource limit exceeded"})
    assert isinstance(obs.error, QueueFull)
    assert str(obs.error).startswith("queue q has no room: AM resource limit exceeded")


def test_ids_sort_as_numbers() -> None:
    assert app_sort_key("application_1_10000") > app_sort_key("application_1_9999")


@pytest.mark.parametrize(("raw", "mb"), [("2g", 2048), ("512m", 512), ("512", 512), ("1G", 1024), (None, 1024)])
def test_memory(raw: str | None, mb: int) -> None:
    assert memory_mb(raw) == mb


def test_memory_rejects_nonsense() -> None:
    with pytest.raises(ConfigurationError, match="not a size"):
        memory_mb("lots")
