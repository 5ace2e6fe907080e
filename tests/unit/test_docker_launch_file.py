"""The file the Docker backend writes into a stopped container for the agent (no engine needed)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from gateway_provisioners.adapters.docker_common import (
    LAUNCH_ARGS,
    LAUNCH_DIR,
    LAUNCH_PARAMS_FILE,
    ContainerRequest,
    params_archive,
)
from gateway_provisioners.core.errors import ConfigurationError


def test_archive_holds_a_private_directory_and_file_of_the_kernel_user() -> None:
    params = {"gp": 2, "token": "secret-token", "connection": {"key": "secret-key"}}
    with tarfile.open(fileobj=io.BytesIO(params_archive(params, 1234, 100))) as tar:
        members = {member.name: member for member in tar.getmembers()}
        assert set(members) == {LAUNCH_DIR.lstrip("/"), LAUNCH_PARAMS_FILE.lstrip("/")}
        folder, member = members[LAUNCH_DIR.lstrip("/")], members[LAUNCH_PARAMS_FILE.lstrip("/")]
        assert folder.isdir() and (folder.mode, folder.uid, folder.gid) == (0o700, 1234, 100)
        assert member.isfile() and (member.mode, member.uid, member.gid) == (0o600, 1234, 100)
        handle = tar.extractfile(member)
        assert handle is not None and json.loads(handle.read()) == params
    assert LAUNCH_ARGS == ["--params", LAUNCH_PARAMS_FILE]


def test_environment_holds_no_launch_parameters() -> None:
    env = ContainerRequest(image="i", extra_env={"OPERATOR": "1"}).environment()
    assert env == {"OPERATOR": "1", "GP_AGENT_LOG_LEVEL": "INFO"}


@pytest.mark.parametrize(
    ("user", "image_user", "ids"),
    [("1000:100", "", (1000, 100)), ("1234", "", (1234, 0)), (None, "", (0, 0)), (None, "42:43", (42, 43))],
)
def test_kernel_ids(user: str | None, image_user: str, ids: tuple[int, int]) -> None:
    assert ContainerRequest(image="i", user=user).kernel_ids(image_user) == ids


def test_a_user_given_by_name_is_refused_with_how_to_fix_it() -> None:
    with pytest.raises(ConfigurationError, match="kernel_uid") as info:
        ContainerRequest(image="i").kernel_ids("jovyan")
    assert "\n" not in str(info.value)
