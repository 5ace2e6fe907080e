"""Unit tests of ``launch``: per-launch values, user checks, the kernel's environment and the LaunchSpec."""

from __future__ import annotations

import pytest

from gateway_provisioners.core.errors import ConfigurationError, NotAuthorized
from gateway_provisioners.core.handshake import decode_token
from gateway_provisioners.core.launch import (
    COMMON_PARAMS,
    ConnectionMode,
    LaunchSpec,
    Param,
    build_kernel_env,
    check_user,
    parse_bool,
    parse_user_list,
    validate_kernel_values,
)
from gateway_provisioners.core.port_range import PortRange

COMMON = {param.name: param for param in COMMON_PARAMS}


# --- Param.parse ----------------------------------------------------------------------------------------------------


def test_str_param_without_rules_passes_through() -> None:
    assert Param("KERNEL_NOTE").parse("anything at all") == "anything at all"


@pytest.mark.parametrize(("raw", "expected"), [("4", 4), ("-2", -2), (" 7 ", 7), ("0", 0)])
def test_int_param(raw: str, expected: int) -> None:
    value = Param("KERNEL_N", kind=int).parse(raw)
    assert value == expected and type(value) is int


@pytest.mark.parametrize("raw", ["4.5", "four", "", "0x10"])
def test_int_param_not_whole_number(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=r"KERNEL_N=.* is not a whole number"):
        Param("KERNEL_N", kind=int).parse(raw)


@pytest.mark.parametrize(("raw", "expected"), [("2.5", 2.5), ("3", 3.0), ("1e2", 100.0)])
def test_float_param(raw: str, expected: float) -> None:
    value = Param("KERNEL_CPUS", kind=float).parse(raw)
    assert value == expected and type(value) is float


def test_float_param_not_a_number() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Param("KERNEL_CPUS", kind=float).parse("lots")
    assert str(caught.value) == "KERNEL_CPUS='lots' is not a number"


@pytest.mark.parametrize("kind", [int, float])
def test_numeric_bounds(kind: type) -> None:
    param = Param("KERNEL_GPUS", kind=kind, minimum=1, maximum=8)
    assert param.parse("1") == 1 and param.parse("8") == 8
    with pytest.raises(ConfigurationError, match=r"^KERNEL_GPUS='0' is below the minimum 1$"):
        param.parse("0")
    with pytest.raises(ConfigurationError, match=r"^KERNEL_GPUS='9' is above the maximum 8$"):
        param.parse("9")


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("false", False), ("0", False), ("Yes", True)])
def test_bool_param(raw: str, expected: bool) -> None:
    assert Param("KERNEL_DEBUG", kind=bool).parse(raw) is expected


def test_bool_param_garbage_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match=r"^KERNEL_DEBUG='maybe' is not a boolean"):
        Param("KERNEL_DEBUG", kind=bool).parse("maybe")


def test_choices() -> None:
    param = Param("KERNEL_QUEUE", choices=("default", "gpu"))
    assert param.parse("gpu") == "gpu"
    with pytest.raises(ConfigurationError, match=r"^KERNEL_QUEUE='batch' is not one of default, gpu$"):
        param.parse("batch")


def test_pattern_with_help() -> None:
    param = Param("KERNEL_IMAGE", pattern=r"[a-z]+:[0-9.]+", help="name:version")
    assert param.parse("python:3.11") == "python:3.11"
    with pytest.raises(ConfigurationError, match=r"^KERNEL_IMAGE='python' is not allowed here \(name:version\)$"):
        param.parse("python")


def test_pattern_must_match_the_whole_value() -> None:
    param = Param("KERNEL_TAG", pattern=r"[a-z]+")
    with pytest.raises(ConfigurationError, match=r"must match \[a-z\]\+"):
        param.parse("abc; rm -rf /")


@pytest.mark.parametrize("raw", ["alice", "bob.smith", "a@b.c", "_svc", "x" * 64])
def test_username_param_accepts(raw: str) -> None:
    assert COMMON["KERNEL_USERNAME"].parse(raw) == raw


@pytest.mark.parametrize("raw", ["", "-rf", "a b", "../etc", "x" * 65, "bob\n", "al;ce", "$(id)"])
def test_username_param_refuses(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="KERNEL_USERNAME"):
        COMMON["KERNEL_USERNAME"].parse(raw)


def test_launch_timeout_param() -> None:
    param = COMMON["KERNEL_LAUNCH_TIMEOUT"]
    assert param.parse("90") == 90.0
    for raw in ("0.5", "3601", "inf", "-inf", "soon"):
        with pytest.raises(ConfigurationError, match="KERNEL_LAUNCH_TIMEOUT"):
            param.parse(raw)


def test_working_dir_param() -> None:
    param = COMMON["KERNEL_WORKING_DIR"]
    assert param.parse("/home/alice/work") == "/home/alice/work"
    for raw in ("relative/dir", "/with\nnewline", ""):
        with pytest.raises(ConfigurationError, match="KERNEL_WORKING_DIR"):
            param.parse(raw)


# --- parse_bool -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on", "y", "t", " True ", True])
def test_parse_bool_true(raw: str | bool) -> None:
    assert parse_bool(raw) is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "off", "n", "f", "", "  ", False])
def test_parse_bool_false(raw: str | bool) -> None:
    assert parse_bool(raw) is False


@pytest.mark.parametrize("raw", ["maybe", "2", "tru", "enabled", "-1"])
def test_parse_bool_garbage(raw: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"^GP_FLAG={raw!r} is not a boolean"):
        parse_bool(raw, "GP_FLAG")


# --- users ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bob, alice", {"bob", "alice"}),
        ("bob", {"bob"}),
        (" bob ,, alice , ", {"bob", "alice"}),
        ("", set()),
        (" , ", set()),
        (None, set()),
        (["bob", "alice"], {"bob", "alice"}),
        (["bob, carol", " alice "], {"bob", "carol", "alice"}),
        ({"root"}, {"root"}),
        (("a", "a"), {"a"}),
        ([], set()),
    ],
)
def test_parse_user_list(value: object, expected: set[str]) -> None:
    assert parse_user_list(value) == expected  # type: ignore[arg-type]


def test_root_is_denied_by_the_default_pattern() -> None:
    with pytest.raises(NotAuthorized, match="user 'root' is not allowed to start kernels") as caught:
        check_user("root", authorized=(), unauthorized="root")
    assert isinstance(caught.value, PermissionError)
    assert "GP_UNAUTHORIZED_USERS" in str(caught.value)
    check_user("alice", authorized=(), unauthorized="root")


def test_denials_win_over_allowances() -> None:
    with pytest.raises(NotAuthorized, match="not allowed"):
        check_user("bob", authorized="bob, alice", unauthorized=["bob"])


def test_allowlist() -> None:
    check_user("alice", authorized=["alice", "bob"], unauthorized=())
    with pytest.raises(NotAuthorized, match="user 'carol' is not in authorized_users for kernel 'Python 3'"):
        check_user("carol", authorized="alice,bob", unauthorized="root", kernel_name="Python 3")


def test_empty_lists_allow_everyone() -> None:
    check_user("anyone", authorized=None, unauthorized=None)  # type: ignore[arg-type]
    check_user("root", authorized="", unauthorized="")


def test_user_names_are_exact() -> None:
    check_user("rooter", authorized=(), unauthorized="root")
    with pytest.raises(NotAuthorized):
        check_user("alice2", authorized="alice", unauthorized=())


# --- validate_kernel_values ----------------------------------------------------------------------------------------


def test_validate_kernel_values_parses_what_the_schema_knows() -> None:
    schema = [*COMMON_PARAMS, Param("KERNEL_CPUS", kind=float, minimum=0.1), Param("KERNEL_GPU", kind=bool)]
    env = {
        "KERNEL_USERNAME": "alice",
        "KERNEL_LAUNCH_TIMEOUT": "45",
        "KERNEL_CPUS": "1.5",
        "KERNEL_GPU": "false",
        "KERNEL_UNKNOWN": "kept out of the checked values",
        "PATH": "/usr/bin",
    }
    assert validate_kernel_values(env, schema) == {
        "KERNEL_USERNAME": "alice",
        "KERNEL_LAUNCH_TIMEOUT": 45.0,
        "KERNEL_CPUS": 1.5,
        "KERNEL_GPU": False,
    }


def test_validate_kernel_values_skips_absent_and_none() -> None:
    assert validate_kernel_values({"KERNEL_USERNAME": None}, COMMON_PARAMS) == {}  # type: ignore[dict-item]
    assert validate_kernel_values({}, COMMON_PARAMS) == {}


def test_validate_kernel_values_refuses_a_bad_value() -> None:
    with pytest.raises(ConfigurationError, match="KERNEL_LAUNCH_TIMEOUT='99999' is above the maximum 3600"):
        validate_kernel_values({"KERNEL_USERNAME": "alice", "KERNEL_LAUNCH_TIMEOUT": "99999"}, COMMON_PARAMS)


def test_validate_kernel_values_converts_non_strings() -> None:
    assert validate_kernel_values({"KERNEL_N": 3}, [Param("KERNEL_N", kind=int)]) == {"KERNEL_N": 3}  # type: ignore[dict-item]


# --- build_kernel_env -----------------------------------------------------------------------------------------------


def test_build_kernel_env_copies_only_kernel_values_and_the_allowlist() -> None:
    request_env = {
        "KERNEL_USERNAME": "alice",
        "KERNEL_EXTRA": "1",
        "SECRET_TOKEN": "do-not-leak",
        "AWS_SECRET_ACCESS_KEY": "do-not-leak",
        "PATH": "/usr/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "kernel_lowercase": "no",
        "MY_KERNEL_X": "no",
    }
    env = build_kernel_env(request_env, spec_env={"PYTHONUNBUFFERED": "1"}, allowlist=["PATH", "LANG"])
    assert env == {
        "KERNEL_USERNAME": "alice",
        "KERNEL_EXTRA": "1",
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }
    assert "do-not-leak" not in env.values()


def test_build_kernel_env_without_allowlist() -> None:
    assert build_kernel_env({"SECRET_TOKEN": "x", "PATH": "/bin", "KERNEL_A": "a"}, {}) == {"KERNEL_A": "a"}


def test_build_kernel_env_spec_env_wins() -> None:
    env = build_kernel_env(
        {"KERNEL_MODE": "client", "PATH": "/client/bin"}, {"KERNEL_MODE": "spec", "PATH": "/spec/bin"}, ["PATH"]
    )
    assert env == {"KERNEL_MODE": "spec", "PATH": "/spec/bin"}


def test_build_kernel_env_values_are_text() -> None:
    env = build_kernel_env({"KERNEL_N": 3}, {"OMP_NUM_THREADS": 2})  # type: ignore[dict-item]
    assert env == {"KERNEL_N": "3", "OMP_NUM_THREADS": "2"}


def test_build_kernel_env_does_not_change_its_inputs() -> None:
    request_env, spec_env = {"KERNEL_A": "1", "SECRET": "s"}, {"B": "2"}
    build_kernel_env(request_env, spec_env)
    assert request_env == {"KERNEL_A": "1", "SECRET": "s"} and spec_env == {"B": "2"}


# --- LaunchSpec -----------------------------------------------------------------------------------------------------


def test_empty_argv_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="argv is empty"):
        LaunchSpec("k1", [])


def test_launch_spec_defaults() -> None:
    spec = LaunchSpec("k1", ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    assert spec.mode is ConnectionMode.STDOUT
    assert spec.port_range.is_any
    assert spec.response_address is None
    assert len(spec.token) == 32
    assert LaunchSpec("k2", ["x"]).token != spec.token
    assert spec.token.hex() not in repr(spec) and "token" not in repr(spec)


def test_agent_params() -> None:
    token = bytes(range(32))
    spec = LaunchSpec(
        "k1",
        ["python", "-f", "{connection_file}"],
        env={"KERNEL_USERNAME": "alice"},
        kernel_name="python3",
        mode=ConnectionMode.CALLBACK,
        port_range=PortRange(40000, 40999),
        response_address="10.0.0.1:8877",
        kernel_ip="0.0.0.0",
        cwd="/home/alice",
        token=token,
    )
    params = spec.agent_params(python="/usr/bin/python3")
    assert params == {
        "gp": 2,
        "kernel_id": "k1",
        "token": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "mode": "callback",
        "argv": ["python", "-f", "{connection_file}"],
        "env": {"KERNEL_USERNAME": "alice"},
        "kernel_ip": "0.0.0.0",
        "port_range": "40000..40999",
        "kernel_name": "python3",
        "allow_root": False,
        "watchdog": 60.0,
        "ready_timeout": 30.0,
        "response_address": "10.0.0.1:8877",
        "cwd": "/home/alice",
        "python": "/usr/bin/python3",
    }
    assert decode_token(params["token"]) == token


def test_agent_params_omit_unset_optionals_and_copy_mutables() -> None:
    spec = LaunchSpec("k1", ["python"], env={"A": "1"})
    params = spec.agent_params()
    assert "response_address" not in params and "cwd" not in params
    assert params["port_range"] == "0..0" and params["mode"] == "stdout"
    params["argv"].append("--evil")
    params["env"]["B"] = "2"
    assert spec.argv == ["python"] and spec.env == {"A": "1"}


def test_connection_mode_text() -> None:
    assert [str(mode) for mode in ConnectionMode] == ["callback", "stdout", "assigned"]
    assert ConnectionMode("assigned") is ConnectionMode.ASSIGNED


def test_agent_params_carry_curve_keys_only_when_set() -> None:
    public, secret = "P" * 40, "S" * 40
    spec = LaunchSpec("k1", ["python"], curve_keys=(public, secret))
    assert spec.agent_params()["curve"] == {"publickey": public, "secretkey": secret}
    assert secret not in repr(spec)
    assert "curve" not in LaunchSpec("k1", ["python"]).agent_params()
