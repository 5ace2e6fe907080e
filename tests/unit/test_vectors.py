"""The shared handshake vectors: the core and the agent must reproduce each one exactly and open each other's seals.

The agent (``launchers/gp_agent.py``) implements protocol v2 independently of ``gateway_provisioners.core.handshake``;
agreeing on fixed vectors (and not only with each other at random) is what keeps the two in step.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from types import ModuleType
from typing import Any

import pytest

from gateway_provisioners.core import handshake as hs
from gateway_provisioners.core.errors import ProtocolError
from gateway_provisioners.core.handshake import EnvelopeError

from .conftest import VECTORS_DIR, load_script, load_vectors

VECTORS = load_vectors()
PAYLOADS = VECTORS["payloads"]
REJECTIONS = VECTORS["payload_rejections"]
CONTROLS = VECTORS["control"]
FRAMES = [(control, frame) for control in CONTROLS for frame in control["frames"]]


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["name"] for item in items]


def frame_ids() -> list[str]:
    return [f"{control['name']}-{frame['direction']}-{frame['counter']}" for control, frame in FRAMES]


def token_of(vector: dict[str, Any]) -> bytes:
    return hs.decode_token(vector["token"])


def keys_of(control: dict[str, Any]) -> dict[str, bytes]:
    return {"s2a": bytes.fromhex(control["s2a"]), "a2s": bytes.fromhex(control["a2s"])}


def rfc5869_hkdf_sha256(ikm: bytes, info: bytes, salt: bytes | None = None, length: int = 32) -> bytes:
    """HKDF written out from RFC 5869 with the standard library: a third, independent implementation."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm, counter = okm + block, counter + 1
    return okm[:length]


@pytest.fixture(scope="module")
def protocol(agent: ModuleType) -> Any:
    return agent.Protocol()


# --- the vector file itself -------------------------------------------------------------------------------------------


def test_vector_file_is_what_the_generator_writes() -> None:
    generator = load_script(VECTORS_DIR / "make_vectors.py", "make_vectors_under_test")
    assert generator.render(generator.build_vectors()) == (VECTORS_DIR / "handshake-v2.json").read_text("utf-8")


def test_vector_file_covers_what_it_must() -> None:
    assert VECTORS["protocol"] == hs.PROTOCOL_VERSION == 2
    assert len(PAYLOADS) >= 2 and len(CONTROLS) >= 2
    assert any(not p["kernel_id"].isascii() for p in PAYLOADS), "a non-ASCII kernel id pins the UTF-8 encoding"
    assert {p["info"]["status"] for p in PAYLOADS} == {"ready", "failed"}
    for control in CONTROLS:
        seen = {(f["direction"], f["counter"]) for f in control["frames"]}
        assert seen == {("s2a", 0), ("s2a", 1), ("a2s", 0), ("a2s", 1)}
    assert {r["reply"] for r in REJECTIONS} >= {"bad-seal", "unsupported-version", "malformed"}


@pytest.mark.parametrize("vector", PAYLOADS, ids=ids(PAYLOADS))
def test_payload_key_matches_rfc5869(vector: dict[str, Any]) -> None:
    assert rfc5869_hkdf_sha256(token_of(vector), b"gp/2 payload").hex() == vector["payload_key"]


@pytest.mark.parametrize("control", CONTROLS, ids=ids(CONTROLS))
def test_control_keys_match_rfc5869(control: dict[str, Any]) -> None:
    salt = bytes.fromhex(control["agent_nonce"]) + bytes.fromhex(control["server_nonce"])
    suffix = b"\0" + control["kernel_id"].encode("utf-8")
    for direction in ("s2a", "a2s"):
        expected = rfc5869_hkdf_sha256(token_of(control), f"gp/2 control {direction}".encode() + suffix, salt)
        assert expected.hex() == control[direction]


# --- the core reproduces every vector ---------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", PAYLOADS, ids=ids(PAYLOADS))
def test_core_payload_vectors(vector: dict[str, Any]) -> None:
    token, nonce = token_of(vector), bytes.fromhex(vector["nonce"])
    assert hs.encode_token(token) == vector["token"]
    assert hs.payload_key(token).hex() == vector["payload_key"]
    assert hs.seal_payload(token, vector["kernel_id"], vector["info"], nonce=nonce) == vector["envelope"]
    envelope = hs.parse_envelope(vector["envelope"])
    assert (envelope.kernel_id, envelope.nonce) == (vector["kernel_id"], nonce)
    assert hs.open_payload(token, envelope) == vector["info"]


@pytest.mark.parametrize("rejection", REJECTIONS, ids=ids(REJECTIONS))
def test_core_refuses_rejection_vectors(rejection: dict[str, Any]) -> None:
    with pytest.raises(EnvelopeError) as caught:
        hs.open_payload(token_of(rejection), hs.parse_envelope(rejection["envelope"]))
    assert caught.value.code == rejection["reply"]


@pytest.mark.parametrize("control", CONTROLS, ids=ids(CONTROLS))
def test_core_control_key_vectors(control: dict[str, Any]) -> None:
    keys = hs.control_keys(
        token_of(control),
        control["kernel_id"],
        bytes.fromhex(control["agent_nonce"]),
        bytes.fromhex(control["server_nonce"]),
    )
    assert {d: k.hex() for d, k in keys.items()} == {"s2a": control["s2a"], "a2s": control["a2s"]}


@pytest.mark.parametrize("control", CONTROLS, ids=ids(CONTROLS))
@pytest.mark.parametrize("direction", ["s2a", "a2s"])
def test_core_seals_and_opens_frame_vectors(control: dict[str, Any], direction: str) -> None:
    frames = [f for f in control["frames"] if f["direction"] == direction]
    sender = hs.ControlCipher(keys_of(control), sending=direction)
    receiver = hs.ControlCipher(keys_of(control), sending="a2s" if direction == "s2a" else "s2a")
    for expected in sorted(frames, key=lambda f: f["counter"]):
        sealed = sender.seal(expected["message"])
        assert sealed.hex() == expected["sealed"]
        assert int.from_bytes(sealed[:8], "big") == expected["counter"]
        assert receiver.open(bytes.fromhex(expected["sealed"])) == expected["message"]


# --- the agent reproduces every vector --------------------------------------------------------------------------------


def test_agent_constants_match_core(agent: ModuleType) -> None:
    assert agent.PROTOCOL_VERSION == hs.PROTOCOL_VERSION
    assert tuple(agent.SUPPORTED_VERSIONS) == hs.SUPPORTED_VERSIONS
    assert agent.STDOUT_PREFIX == hs.STDOUT_PREFIX
    assert agent.MAX_CONTROL_FRAME_BYTES == hs.MAX_CONTROL_FRAME_BYTES
    assert agent.Protocol.PAYLOAD_INFO == hs.PAYLOAD_INFO
    assert agent.Protocol.CONTROL_INFO == hs.CONTROL_INFO


@pytest.mark.parametrize("vector", PAYLOADS, ids=ids(PAYLOADS))
def test_agent_payload_vectors(agent: ModuleType, protocol: Any, vector: dict[str, Any]) -> None:
    token = agent.decode_token(vector["token"])
    assert token == token_of(vector)
    assert protocol.hkdf(token, agent.Protocol.PAYLOAD_INFO).hex() == vector["payload_key"]
    sealed = protocol.seal_payload(token, vector["kernel_id"], vector["info"], nonce=bytes.fromhex(vector["nonce"]))
    assert sealed == vector["envelope"]


@pytest.mark.parametrize("control", CONTROLS, ids=ids(CONTROLS))
def test_agent_control_key_vectors(protocol: Any, control: dict[str, Any]) -> None:
    keys = protocol.control_keys(
        token_of(control),
        control["kernel_id"],
        bytes.fromhex(control["agent_nonce"]),
        bytes.fromhex(control["server_nonce"]),
    )
    assert {d: k.hex() for d, k in keys.items()} == {"s2a": control["s2a"], "a2s": control["a2s"]}


@pytest.mark.parametrize("control", CONTROLS, ids=ids(CONTROLS))
def test_agent_seals_a2s_and_opens_s2a_frame_vectors(protocol: Any, control: dict[str, Any]) -> None:
    cipher = protocol.cipher(keys_of(control))
    by_direction = {
        d: sorted((f for f in control["frames"] if f["direction"] == d), key=lambda f: f["counter"])
        for d in ("s2a", "a2s")
    }
    for expected in by_direction["a2s"]:
        assert cipher.seal(expected["message"]).hex() == expected["sealed"]
    for expected in by_direction["s2a"]:
        assert cipher.open(bytes.fromhex(expected["sealed"])) == expected["message"]


# --- each side opens what the other seals (fresh random nonces and keys) ----------------------------------------------


def test_agent_seals_payload_core_opens(agent: ModuleType, protocol: Any) -> None:
    token = hs.new_token()
    info = {"status": "ready", "ip": "127.0.0.1", "shell_port": 50001, "key": "k", "note": "ü"}
    line = protocol.seal_payload(agent.decode_token(hs.encode_token(token)), "kernel-x", info)
    assert hs.open_payload(token, hs.parse_envelope(line.encode("utf-8"))) == info
    # ... and only for the kernel it was sealed for, with the launch's own token.
    relabelled = json.dumps({**json.loads(line), "kernel_id": "kernel-y"})
    with pytest.raises(EnvelopeError) as caught:
        hs.open_payload(token, hs.parse_envelope(relabelled))
    assert caught.value.code == hs.Reply.BAD_SEAL
    with pytest.raises(EnvelopeError):
        hs.open_payload(hs.new_token(), hs.parse_envelope(line))


def test_agent_payload_nonces_are_fresh(protocol: Any) -> None:
    token = hs.new_token()
    first, second = (json.loads(protocol.seal_payload(token, "k", {"a": 1})) for _ in range(2))
    assert len(base64.b64decode(first["nonce"])) == hs.NONCE_BYTES
    assert first["nonce"] != second["nonce"] and first["ciphertext"] != second["ciphertext"]


def test_control_conversation_between_core_and_agent(protocol: Any) -> None:
    token, agent_nonce, server_nonce = hs.new_token(), os.urandom(16), os.urandom(16)
    server = hs.ControlCipher(hs.control_keys(token, "kernel-ü", agent_nonce, server_nonce), sending="s2a")
    agent_side = protocol.cipher(protocol.control_keys(token, "kernel-ü", agent_nonce, server_nonce))
    for request_id in range(1, 5):
        request = {"op": "signal", "id": request_id, "signum": 2}
        assert agent_side.open(server.seal(request)) == request
        reply = {"ok": True, "kernel": "running", "pid": 99, "reply": request_id}
        event = {"event": "kernel-exited", "exit_code": request_id, "log_tail": ["ü"]}
        assert server.open(agent_side.seal(reply)) == reply
        assert server.open(agent_side.seal(event)) == event


def test_agent_refuses_core_frames_out_of_order_or_reflected(protocol: Any) -> None:
    keys = hs.control_keys(hs.new_token(), "k", bytes(16), bytes(range(16)))
    server = hs.ControlCipher(keys, sending="s2a")
    agent_side = protocol.cipher(keys)
    first, second = server.seal({"op": "ping", "id": 1}), server.seal({"op": "ping", "id": 2})
    with pytest.raises(ValueError):
        agent_side.open(second)
    assert agent_side.open(first) == {"op": "ping", "id": 1}
    with pytest.raises(ValueError):
        agent_side.open(first)  # replayed
    # The agent's own a2s frame with the counter it expects next, sent back to it: the direction is in the seal.
    agent_side.seal({"reply": 0})
    reflected = agent_side.seal({"reply": 1})
    with pytest.raises(ValueError):
        agent_side.open(reflected)
    assert agent_side.open(second) == {"op": "ping", "id": 2}


def test_core_refuses_agent_frames_out_of_order(protocol: Any) -> None:
    keys = hs.control_keys(hs.new_token(), "k", bytes(16), bytes(range(16)))
    server = hs.ControlCipher(keys, sending="s2a")
    agent_side = protocol.cipher(keys)
    first, second = agent_side.seal({"reply": 1}), agent_side.seal({"reply": 2})
    with pytest.raises(ProtocolError):
        server.open(second)
    assert server.open(first) == {"reply": 1}
    with pytest.raises(ProtocolError):
        server.open(first)
    assert server.open(second) == {"reply": 2}
