"""Unit tests of the connection broker: matching payloads to waiting launches, once."""

from __future__ import annotations

import asyncio
import base64
import json
import logging

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway_provisioners.core import broker as broker_module
from gateway_provisioners.core.broker import ConnectionBroker
from gateway_provisioners.core.handshake import (
    MAX_PAYLOAD_BYTES,
    Reply,
    new_token,
    payload_aad,
    payload_key,
    seal_payload,
)

INFO = {"status": "ready", "ip": "10.0.0.9", "shell_port": 40001, "key": "hmac-key-value"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture
def broker() -> ConnectionBroker:
    return ConnectionBroker()


async def test_expect_then_accept_resolves_the_future(broker: ConnectionBroker) -> None:
    token = new_token()
    future = broker.expect("k1", token)
    assert broker.is_waiting("k1") and not future.done()
    assert broker.accept(seal_payload(token, "k1", INFO), peer="10.0.0.9:5555") == (Reply.ACCEPTED, "")
    assert await asyncio.wait_for(future, 5) == INFO
    assert not broker.is_waiting("k1")


async def test_accept_takes_bytes(broker: ConnectionBroker) -> None:
    token = new_token()
    future = broker.expect("k1", token)
    assert broker.accept(seal_payload(token, "k1", INFO).encode())[0] == Reply.ACCEPTED
    assert future.result() == INFO


async def test_a_payload_is_accepted_once(broker: ConnectionBroker) -> None:
    token = new_token()
    future = broker.expect("k1", token)
    envelope = seal_payload(token, "k1", INFO)
    assert broker.accept(envelope)[0] == Reply.ACCEPTED
    assert broker.accept(envelope)[0] == Reply.REPLAYED
    # A fresh, correctly sealed payload for the same launch is refused too: the launch has its connection info.
    assert broker.accept(seal_payload(token, "k1", {**INFO, "ip": "6.6.6.6"}))[0] == Reply.REPLAYED
    assert future.result() == INFO


async def test_unknown_kernel(broker: ConnectionBroker) -> None:
    waiting = broker.expect("k1", new_token())
    code, detail = broker.accept(seal_payload(new_token(), "k2", INFO))
    assert code == Reply.UNKNOWN_KERNEL and detail
    assert not waiting.done() and broker.is_waiting("k1")


async def test_bad_seal_does_not_cancel_the_pending_launch(broker: ConnectionBroker) -> None:
    token = new_token()
    future = broker.expect("k1", token)
    assert broker.accept(seal_payload(new_token(), "k1", {"ip": "6.6.6.6"}))[0] == Reply.BAD_SEAL
    assert not future.done() and broker.is_waiting("k1")
    assert broker.accept(seal_payload(token, "k1", INFO))[0] == Reply.ACCEPTED
    assert future.result() == INFO


async def test_payload_sealed_for_another_kernel_is_bad_seal(broker: ConnectionBroker) -> None:
    token = new_token()
    future = broker.expect("k1", token)
    broker.expect("k2", token)  # same token for both (it never is; this isolates the kernel-id binding)
    envelope = seal_payload(token, "k2", INFO).replace('"kernel_id":"k2"', '"kernel_id":"k1"')
    assert broker.accept(envelope)[0] == Reply.BAD_SEAL
    assert not future.done()


async def test_sealed_non_json_payload_is_answered_and_keeps_the_launch(broker: ConnectionBroker) -> None:
    token = new_token()
    future = broker.expect("k1", token)
    nonce = bytes(12)
    ciphertext = AESGCM(payload_key(token)).encrypt(nonce, b"not json", payload_aad("k1"))
    envelope = {"gp": 2, "kernel_id": "k1", "nonce": b64(nonce), "ciphertext": b64(ciphertext)}
    assert broker.accept(json.dumps(envelope))[0] == Reply.MALFORMED
    assert not future.done() and broker.is_waiting("k1")
    assert broker.accept(seal_payload(token, "k1", INFO))[0] == Reply.ACCEPTED


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("not json", Reply.MALFORMED),
        (b"\x00\xff", Reply.MALFORMED),
        ("[]", Reply.MALFORMED),
        ('{"gp": 1, "kernel_id": "k1"}', Reply.UNSUPPORTED_VERSION),
        ('{"kernel_id": "k1"}', Reply.UNSUPPORTED_VERSION),
        ('{"gp": 2, "kernel_id": "k1"}', Reply.MALFORMED),
        ("x" * (MAX_PAYLOAD_BYTES + 1), Reply.TOO_LARGE),
    ],
    ids=["not-json", "binary", "list", "gp-1", "no-gp", "no-seal", "too-large"],
)
async def test_bad_input_is_answered_not_raised(broker: ConnectionBroker, data: str | bytes, code: str) -> None:
    future = broker.expect("k1", new_token())
    assert broker.accept(data)[0] == code
    assert not future.done() and broker.is_waiting("k1")


async def test_forget_cancels_and_refuses_later_payloads(broker: ConnectionBroker) -> None:
    token = new_token()
    future = broker.expect("k1", token)
    broker.forget("k1")
    assert future.cancelled()
    assert not broker.is_waiting("k1")
    assert broker.accept(seal_payload(token, "k1", INFO))[0] == Reply.UNKNOWN_KERNEL
    broker.forget("k1")  # twice is harmless
    broker.forget("never-expected")


async def test_forget_after_accept_keeps_the_result(broker: ConnectionBroker) -> None:
    token = new_token()
    future = broker.expect("k1", token)
    broker.accept(seal_payload(token, "k1", INFO))
    broker.forget("k1")
    assert not future.cancelled() and future.result() == INFO


async def test_expect_again_replaces_the_earlier_launch(broker: ConnectionBroker) -> None:
    old_token, new = new_token(), new_token()
    old_future = broker.expect("k1", old_token)
    new_future = broker.expect("k1", new)
    assert old_future.cancelled()
    assert broker.accept(seal_payload(old_token, "k1", INFO))[0] == Reply.BAD_SEAL
    assert broker.accept(seal_payload(new, "k1", INFO))[0] == Reply.ACCEPTED
    assert new_future.result() == INFO


async def test_expect_again_after_accept_clears_the_replay_memory(broker: ConnectionBroker) -> None:
    first = new_token()
    broker.expect("k1", first)
    assert broker.accept(seal_payload(first, "k1", INFO))[0] == Reply.ACCEPTED
    second = new_token()  # a restart that needs a new agent: same kernel id, new token
    future = broker.expect("k1", second)
    restarted = {**INFO, "shell_port": 41001}
    assert broker.accept(seal_payload(second, "k1", restarted))[0] == Reply.ACCEPTED
    assert future.result() == restarted
    # Once the new launch has its payload, any other payload for the kernel, the first launch's too, is a replay.
    assert broker.accept(seal_payload(first, "k1", INFO))[0] == Reply.REPLAYED


async def test_replay_memory_is_bounded(broker: ConnectionBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_module, "REMEMBER_ACCEPTED", 2)
    envelopes = {}
    for kernel_id in ("k1", "k2", "k3"):
        token = new_token()
        broker.expect(kernel_id, token)
        envelopes[kernel_id] = seal_payload(token, kernel_id, INFO)
        assert broker.accept(envelopes[kernel_id])[0] == Reply.ACCEPTED
    assert broker.accept(envelopes["k1"])[0] == Reply.UNKNOWN_KERNEL  # forgotten, but still refused
    assert broker.accept(envelopes["k2"])[0] == Reply.REPLAYED
    assert broker.accept(envelopes["k3"])[0] == Reply.REPLAYED


async def test_launches_are_independent(broker: ConnectionBroker) -> None:
    tokens = {f"k{i}": new_token() for i in range(5)}
    futures = {kernel_id: broker.expect(kernel_id, token) for kernel_id, token in tokens.items()}
    for kernel_id in reversed(list(tokens)):
        info = {**INFO, "kernel": kernel_id}
        assert broker.accept(seal_payload(tokens[kernel_id], kernel_id, info))[0] == Reply.ACCEPTED
    assert {k: f.result()["kernel"] for k, f in futures.items()} == {k: k for k in tokens}


async def test_rejections_are_logged_without_the_payload(
    broker: ConnectionBroker, caplog: pytest.LogCaptureFixture
) -> None:
    broker.expect("k1", new_token())
    envelope = seal_payload(new_token(), "k1", INFO)
    with caplog.at_level(logging.WARNING, logger="gateway_provisioners.broker"):
        broker.accept(envelope, peer="10.9.9.9:4242")
    text = caplog.text
    assert "bad-seal" in text and "k1" in text and "10.9.9.9:4242" in text
    ciphertext = envelope.split('"ciphertext":"')[1].rstrip('"}')
    assert ciphertext[:24] not in text and "hmac-key-value" not in text
