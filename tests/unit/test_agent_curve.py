"""The agent puts the server's CurveZMQ keys in the kernel's connection file, and never reports them back."""

from __future__ import annotations

import argparse
import json
import shutil
from types import ModuleType
from typing import Any

import pytest

from gateway_provisioners.core.handshake import encode_token, new_token


def make_agent(agent: ModuleType, **params: Any) -> Any:
    opts = argparse.Namespace(log_file=None, watchdog=None, keep_log=False)
    base = {"kernel_id": "k1", "token": encode_token(new_token()), "kernel_ip": "127.0.0.1", "argv": ["python"]}
    return agent.Agent({**base, **params}, opts)


def test_curve_keys_reach_the_connection_file_not_the_report(agent: ModuleType) -> None:
    public, secret = "p" * 40, "s" * 40
    subject = make_agent(agent, curve={"publickey": public, "secretkey": secret})
    try:
        subject.prepare()
        with open(subject.connection_file) as handle:
            written = json.load(handle)
        assert (written["curve_publickey"], written["curve_secretkey"]) == (public, secret)
        assert written["key"] and written["shell_port"]
        report = subject.payload(ready=True)
        assert report["shell_port"] == written["shell_port"]
        assert not any(k.startswith("curve_") for k in report)
    finally:
        for sock in subject.held:
            sock.close()
        shutil.rmtree(subject.workdir, ignore_errors=True)


@pytest.mark.parametrize("curve", [{"publickey": "short", "secretkey": "s" * 40}, {"publickey": "p" * 40}, "keys"])
def test_malformed_curve_keys_are_refused(agent: ModuleType, curve: Any) -> None:
    subject = make_agent(agent, curve=curve)
    try:
        with pytest.raises(ValueError, match="curve needs publickey and secretkey, each 40 Z85 characters"):
            subject.prepare()
    finally:
        for sock in subject.held:
            sock.close()
        shutil.rmtree(subject.workdir, ignore_errors=True)
