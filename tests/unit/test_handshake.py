"""Unit tests of ``gateway_provisioners.core.handshake``: payload envelopes, replies, control-frame ciphers."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway_provisioners.core import handshake as hs
from gateway_provisioners.core.errors import ProtocolError, ProtocolVersionMismatch
from gateway_provisioners.core.handshake import EnvelopeError, Reply

TOKEN = bytes(range(32))
OTHER_TOKEN = bytes(range(1, 33))
INFO: dict[str, Any] = {"status": "ready", "ip": "10.0.0.5", "shell_port": 40001, "key": "secret-key"}


def envelope_dict(**changes: Any) -> dict[str, Any]:
    obj = json.loads(hs.seal_payload(TOKEN, "kernel-a", INFO))
    obj.update(changes)
    return obj


def open_text(text: str | bytes, token: bytes = TOKEN) -> dict[str, Any]:
    return hs.open_payload(token, hs.parse_envelope(text))


def code_of(text: str | bytes, token: bytes = TOKEN) -> str:
    with pytest.raises(EnvelopeError) as caught:
        open_text(text, token)
    assert isinstance(caught.value, ProtocolError)
    return caught.value.code


# --- tokens -----------------------------------------------------------------------------------------------------------


def test_new_tokens_are_random_32_bytes() -> None:
    first, second = hs.new_token(), hs.new_token()
    assert len(first) == len(second) == hs.TOKEN_BYTES == 32
    assert first != second


def test_token_text_round_trip_is_base64url() -> None:
    token = bytes([0xFB, 0xFF] * 16)  # encodes to '-' and '_' in base64url, '+' and '/' in plain base64
    text = hs.encode_token(token)
    assert "+" not in text and "/" not in text and ("-" in text or "_" in text)
    assert hs.decode_token(text) == token
    assert hs.decode_token(f"  {text}\n") == token


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("abc", "base64url"),  # bad padding
        ("tøken", "base64url"),  # not ASCII
        (base64.urlsafe_b64encode(bytes(16)).decode(), "32 bytes, got 16"),
        (base64.urlsafe_b64encode(bytes(33)).decode(), "32 bytes, got 33"),
        ("", "32 bytes, got 0"),
    ],
)
def test_decode_token_errors(text: str, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        hs.decode_token(text)


# --- sealing and opening --------------------------------------------------------------------------------------------


def test_seal_open_round_trip() -> None:
    line = hs.seal_payload(TOKEN, "kernel-a", INFO)
    assert "\n" not in line
    obj = json.loads(line)
    assert set(obj) == {"gp", "kernel_id", "nonce", "ciphertext"}
    assert obj["gp"] == 2 and obj["kernel_id"] == "kernel-a"
    assert len(base64.b64decode(obj["nonce"])) == hs.NONCE_BYTES
    assert "secret-key" not in line and "10.0.0.5" not in line  # sealed, not merely encoded
    assert open_text(line) == INFO
    assert open_text(line.encode("utf-8")) == INFO


def test_each_seal_uses_a_fresh_nonce() -> None:
    first, second = (json.loads(hs.seal_payload(TOKEN, "kernel-a", INFO)) for _ in range(2))
    assert first["nonce"] != second["nonce"]
    assert first["ciphertext"] != second["ciphertext"]


def test_fixed_nonce_seals_deterministically() -> None:
    nonce = bytes(range(12))
    assert hs.seal_payload(TOKEN, "k", INFO, nonce=nonce) == hs.seal_payload(
        TOKEN, "k", dict(reversed(INFO.items())), nonce=nonce
    )


def test_payload_for_kernel_a_relabelled_as_kernel_b_is_bad_seal() -> None:
    forged = json.dumps(envelope_dict(kernel_id="kernel-b"))
    assert code_of(forged) == Reply.BAD_SEAL


def test_wrong_token_is_bad_seal() -> None:
    assert code_of(hs.seal_payload(TOKEN, "kernel-a", INFO), token=OTHER_TOKEN) == Reply.BAD_SEAL


@pytest.mark.parametrize("position", [0, 5, -1])  # ciphertext start, middle, last byte of the tag
def test_tampered_ciphertext_is_bad_seal(position: int) -> None:
    obj = envelope_dict()
    raw = bytearray(base64.b64decode(obj["ciphertext"]))
    raw[position] ^= 0x80
    obj["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    assert code_of(json.dumps(obj)) == Reply.BAD_SEAL


def test_changed_nonce_is_bad_seal() -> None:
    obj = envelope_dict(nonce=base64.b64encode(bytes(12)).decode())
    assert code_of(json.dumps(obj)) == Reply.BAD_SEAL


def test_truncated_ciphertext_is_bad_seal() -> None:
    obj = envelope_dict()
    obj["ciphertext"] = base64.b64encode(base64.b64decode(obj["ciphertext"])[:-1]).decode()
    assert code_of(json.dumps(obj)) == Reply.BAD_SEAL


def seal_raw(plaintext: bytes, kernel_id: str = "k", token: bytes = TOKEN) -> str:
    """An envelope around any plaintext, sealed correctly (what only a holder of the token can make)."""
    nonce = bytes(12)
    ciphertext = AESGCM(hs.payload_key(token)).encrypt(nonce, plaintext, hs.payload_aad(kernel_id))
    return json.dumps(
        {
            "gp": 2,
            "kernel_id": kernel_id,
            "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(ciphertext).decode(),
        }
    )


@pytest.mark.parametrize("plaintext", [b"[1,2]", b'"text"', b"not json", b"\xff\xfe", b""])
def test_sealed_plaintext_that_is_not_an_object_is_malformed(plaintext: bytes) -> None:
    assert code_of(seal_raw(plaintext)) == Reply.MALFORMED


# --- envelope framing -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("not json at all", Reply.MALFORMED),
        (b"\xff\xfe\x00garbage", Reply.MALFORMED),
        ("", Reply.MALFORMED),
        ("[1, 2, 3]", Reply.MALFORMED),
        ('"a string"', Reply.MALFORMED),
        ("null", Reply.MALFORMED),
        (json.dumps({k: v for k, v in envelope_dict().items() if k != "gp"}), Reply.UNSUPPORTED_VERSION),
        (json.dumps(envelope_dict(gp=1)), Reply.UNSUPPORTED_VERSION),
        (json.dumps(envelope_dict(gp=3)), Reply.UNSUPPORTED_VERSION),
        (json.dumps(envelope_dict(gp="2")), Reply.UNSUPPORTED_VERSION),
        (json.dumps({"version": 1, "key": "k"}), Reply.UNSUPPORTED_VERSION),
        # the older packages' v1 frame: base64 of a JSON object with "version"
        (base64.b64encode(b'{"version": 1, "key": "k", "conn_info": "x"}').decode(), Reply.UNSUPPORTED_VERSION),
        (base64.b64encode(b'{"version": 1, "key": "k"}'), Reply.UNSUPPORTED_VERSION),
        (base64.b64encode(b'{"key": "k"}').decode(), Reply.MALFORMED),
        (base64.b64encode(b"[1]").decode(), Reply.MALFORMED),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "empty",
        "json-list",
        "json-string",
        "json-null",
        "missing-gp",
        "gp-1",
        "gp-3",
        "gp-as-text",
        "v1-json",
        "v1-base64-frame",
        "v1-base64-frame-bytes",
        "base64-object-without-version",
        "base64-list",
    ],
)
def test_parse_envelope_rejects(data: str | bytes, code: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        hs.parse_envelope(data)
    assert caught.value.code == code


@pytest.mark.parametrize("field", ["kernel_id", "nonce", "ciphertext"])
def test_missing_field_is_malformed(field: str) -> None:
    obj = envelope_dict()
    del obj[field]
    with pytest.raises(EnvelopeError, match="lacks") as caught:
        hs.parse_envelope(json.dumps(obj))
    assert caught.value.code == Reply.MALFORMED


@pytest.mark.parametrize(
    "changes",
    [{"kernel_id": ""}, {"kernel_id": 7}, {"nonce": None}, {"ciphertext": ["x"]}, {"nonce": 12}],
    ids=["empty-kernel-id", "numeric-kernel-id", "null-nonce", "list-ciphertext", "numeric-nonce"],
)
def test_wrongly_typed_field_is_malformed(changes: dict[str, Any]) -> None:
    with pytest.raises(EnvelopeError) as caught:
        hs.parse_envelope(json.dumps(envelope_dict(**changes)))
    assert caught.value.code == Reply.MALFORMED


@pytest.mark.parametrize(
    "changes",
    [{"nonce": "***not base64***"}, {"ciphertext": "abc"}, {"ciphertext": "QUJD\nREVG"}],
    ids=["nonce", "ciphertext-padding", "ciphertext-newline"],
)
def test_bad_base64_is_malformed(changes: dict[str, Any]) -> None:
    with pytest.raises(EnvelopeError, match="base64") as caught:
        hs.parse_envelope(json.dumps(envelope_dict(**changes)))
    assert caught.value.code == Reply.MALFORMED


@pytest.mark.parametrize("length", [0, 8, 11, 13, 16])
def test_wrong_nonce_length_is_malformed(length: int) -> None:
    obj = envelope_dict(nonce=base64.b64encode(bytes(length)).decode())
    with pytest.raises(EnvelopeError, match="12 bytes") as caught:
        hs.parse_envelope(json.dumps(obj))
    assert caught.value.code == Reply.MALFORMED


def test_oversized_payload_is_too_large_before_parsing() -> None:
    obj = envelope_dict(padding="x" * hs.MAX_PAYLOAD_BYTES)
    data = json.dumps(obj).encode()
    assert len(data) > hs.MAX_PAYLOAD_BYTES
    with pytest.raises(EnvelopeError) as caught:
        hs.parse_envelope(data)
    assert caught.value.code == Reply.TOO_LARGE
    with pytest.raises(EnvelopeError) as caught:
        hs.parse_envelope(b"{" * (hs.MAX_PAYLOAD_BYTES + 1))  # not even JSON: the size is checked first
    assert caught.value.code == Reply.TOO_LARGE


def test_payload_at_the_size_limit_is_accepted() -> None:
    line = hs.seal_payload(TOKEN, "kernel-a", INFO)
    padded = line[:-1] + "," + '"pad":"' + "x" * (hs.MAX_PAYLOAD_BYTES - len(line) - 9) + '"}'
    assert len(padded) == hs.MAX_PAYLOAD_BYTES
    assert open_text(padded) == INFO


# --- version check and replies -------------------------------------------------------------------------------------


def test_check_version_accepts_2() -> None:
    hs.check_version(2)


@pytest.mark.parametrize("version", [1, 3, None, "2", 2.5])
def test_check_version_mismatch_names_both_versions(version: Any) -> None:
    with pytest.raises(ProtocolVersionMismatch) as caught:
        hs.check_version(version)
    message = str(caught.value)
    assert repr(version) in message
    assert "[2]" in message
    assert isinstance(caught.value, ProtocolError)


def parse_reply(raw: bytes) -> dict[str, Any]:
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    return json.loads(raw)


def test_reply_accepted() -> None:
    assert parse_reply(hs.make_reply(Reply.ACCEPTED)) == {"gp": 2, "status": "accepted"}
    assert parse_reply(hs.make_reply(Reply.ACCEPTED, "ignored")) == {"gp": 2, "status": "accepted"}


@pytest.mark.parametrize(
    "code",
    [Reply.MALFORMED, Reply.UNKNOWN_KERNEL, Reply.BAD_SEAL, Reply.REPLAYED, Reply.TOO_LARGE, Reply.TIMEOUT, Reply.BUSY],
)
def test_reply_rejected(code: str) -> None:
    assert parse_reply(hs.make_reply(code)) == {"gp": 2, "status": "rejected", "reason": code}
    assert parse_reply(hs.make_reply(code, "why")) == {"gp": 2, "status": "rejected", "reason": code, "detail": "why"}


def test_reply_unsupported_version_lists_supported_versions() -> None:
    reply = parse_reply(hs.make_reply(Reply.UNSUPPORTED_VERSION, "payload speaks protocol 1"))
    assert reply == {
        "gp": 2,
        "status": "rejected",
        "reason": "unsupported-version",
        "detail": "payload speaks protocol 1",
        "supported": [2],
    }


# --- control channel ------------------------------------------------------------------------------------------------


def make_pair(
    agent_nonce: bytes = bytes(16), server_nonce: bytes = bytes(range(16))
) -> tuple[hs.ControlCipher, hs.ControlCipher]:
    keys = hs.control_keys(TOKEN, "kernel-a", agent_nonce, server_nonce)
    return hs.ControlCipher(keys, sending="s2a"), hs.ControlCipher(keys, sending="a2s")


def test_control_keys_are_distinct_per_direction_connection_and_kernel() -> None:
    base = hs.control_keys(TOKEN, "kernel-a", bytes(16), bytes(range(16)))
    assert base["s2a"] != base["a2s"]
    assert all(len(key) == 32 for key in base.values())
    variants = [
        hs.control_keys(TOKEN, "kernel-b", bytes(16), bytes(range(16))),
        hs.control_keys(TOKEN, "kernel-a", bytes([1] * 16), bytes(range(16))),
        hs.control_keys(TOKEN, "kernel-a", bytes(16), bytes(16)),
        hs.control_keys(OTHER_TOKEN, "kernel-a", bytes(16), bytes(range(16))),
    ]
    for variant in variants:
        assert variant["s2a"] != base["s2a"] and variant["a2s"] != base["a2s"]
    assert hs.control_keys(TOKEN, "kernel-a", bytes(16), bytes(range(16))) == base
    assert hs.payload_key(TOKEN) not in base.values()


def test_control_round_trip_both_directions() -> None:
    server, agent = make_pair()
    for i in range(3):
        request = {"op": "ping", "id": i}
        sealed = server.seal(request)
        assert struct.unpack(">Q", sealed[:8])[0] == i
        assert agent.open(sealed) == request
        reply = {"reply": i, "ok": True, "text": "ü"}
        assert server.open(agent.seal(reply)) == reply


def test_control_cipher_rejects_unknown_direction() -> None:
    keys = hs.control_keys(TOKEN, "kernel-a", bytes(16), bytes(16))
    with pytest.raises(ValueError, match="direction"):
        hs.ControlCipher(keys, sending="both")


def test_replayed_frame_is_refused() -> None:
    server, agent = make_pair()
    sealed = server.seal({"op": "signal", "id": 1, "signum": 9})
    assert agent.open(sealed)["signum"] == 9
    with pytest.raises(ProtocolError, match="sequence"):
        agent.open(sealed)


def test_reordered_frame_is_refused_and_does_not_advance() -> None:
    server, agent = make_pair()
    first, second = server.seal({"id": 1}), server.seal({"id": 2})
    with pytest.raises(ProtocolError, match="sequence"):
        agent.open(second)
    assert agent.open(first) == {"id": 1}
    assert agent.open(second) == {"id": 2}


def test_frame_with_forged_counter_is_refused() -> None:
    server, agent = make_pair()
    sealed = server.seal({"id": 1})
    agent.open(sealed)
    moved = struct.pack(">Q", 1) + sealed[8:]  # the old frame re-numbered as the next one
    with pytest.raises(ProtocolError, match="authentication"):
        agent.open(moved)


def test_frame_from_another_connection_is_refused() -> None:
    server, _ = make_pair(agent_nonce=bytes(16), server_nonce=bytes(range(16)))
    _, other_agent = make_pair(agent_nonce=bytes(16), server_nonce=bytes(range(1, 17)))
    with pytest.raises(ProtocolError, match="authentication"):
        other_agent.open(server.seal({"op": "shutdown", "id": 1}))


def test_frame_reflected_to_its_sender_is_refused() -> None:
    server, _ = make_pair()
    with pytest.raises(ProtocolError, match="authentication"):
        server.open(server.seal({"op": "ping", "id": 1}))


@pytest.mark.parametrize("keep", [0, 7, 8, 23])
def test_frame_too_short_is_refused(keep: int) -> None:
    server, agent = make_pair()
    with pytest.raises(ProtocolError, match="too short"):
        agent.open(server.seal({"op": "ping", "id": 1})[:keep])


def test_truncated_frame_is_refused_and_does_not_advance() -> None:
    server, agent = make_pair()
    sealed = server.seal({"op": "ping", "id": 1})
    with pytest.raises(ProtocolError, match="authentication"):
        agent.open(sealed[:-1])
    assert agent.open(sealed) == {"op": "ping", "id": 1}


def test_sealed_non_object_control_message_is_refused() -> None:
    server, agent = make_pair()
    with pytest.raises(ProtocolError, match="not a JSON object"):
        agent.open(server.seal([1, 2]))  # type: ignore[arg-type]


def test_frame_length_prefix() -> None:
    data = b"x" * 300
    framed = hs.frame(data)
    assert framed == struct.pack(">I", 300) + data
    assert hs.frame_length(framed[:4]) == 300
    assert hs.frame(b"") == b"\0\0\0\0"


def test_frame_at_the_limit_is_allowed() -> None:
    framed = hs.frame(bytes(hs.MAX_CONTROL_FRAME_BYTES))
    assert hs.frame_length(framed[:4]) == hs.MAX_CONTROL_FRAME_BYTES


def test_frame_over_the_limit_is_refused() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        hs.frame(bytes(hs.MAX_CONTROL_FRAME_BYTES + 1))
    with pytest.raises(ProtocolError, match="exceeds"):
        hs.frame_length(struct.pack(">I", hs.MAX_CONTROL_FRAME_BYTES + 1))
    with pytest.raises(ProtocolError, match="exceeds"):
        hs.frame_length(b"\xff\xff\xff\xff")


# --- hostile input (issue 11): deep nesting, fuzzing ---------------------------------------------------------------

DEEP = 60_000  # far deeper than Python's recursion limit


@pytest.mark.parametrize(
    "data",
    [
        b"[" * DEEP,
        b'{"gp":2,"kernel_id":' + b"[" * DEEP + b"}",
        base64.b64encode(b'{"version":1,"key":' + b"[" * 40_000 + b"}"),  # inside an older launcher's frame
    ],
    ids=["bare", "in-a-field", "in-a-v1-frame"],
)
def test_deeply_nested_envelope_is_malformed(data: bytes) -> None:
    assert code_of(data) == Reply.MALFORMED


def test_deeply_nested_sealed_plaintext_is_malformed() -> None:
    assert code_of(seal_raw(b"[" * 40_000, "k")) == Reply.MALFORMED  # 40,000 stays under the envelope cap


def test_deeply_nested_control_message_is_refused() -> None:
    _, agent = make_pair()
    counter = struct.pack(">Q", 0)
    keys = hs.control_keys(TOKEN, "kernel-a", bytes(16), bytes(range(16)))
    body = AESGCM(keys["s2a"]).encrypt(b"\0\0\0\0" + counter, b"[" * DEEP, b"s2a" + counter)
    with pytest.raises(ProtocolError, match="not a JSON object"):
        agent.open(counter + body)


def test_fuzzed_envelopes_raise_only_envelope_errors() -> None:
    from .mutate import mutations
    from .test_vectors import PAYLOADS

    tokens = {vector["envelope"].encode(): hs.decode_token(vector["token"]) for vector in PAYLOADS}
    outcomes: dict[str, int] = {}
    for data in mutations(list(tokens), 1500, seed=11):
        try:
            info = hs.open_payload(tokens.get(data, TOKEN), hs.parse_envelope(data))
        except EnvelopeError as exc:
            outcomes[exc.code] = outcomes.get(exc.code, 0) + 1
        else:
            assert isinstance(info, dict)
            outcomes["opened"] = outcomes.get("opened", 0) + 1
    # The mutations reached past the JSON parse: every framing check and the seal were exercised.
    assert {Reply.MALFORMED, Reply.BAD_SEAL, Reply.UNSUPPORTED_VERSION} <= set(outcomes), outcomes


def test_fuzzed_control_frames_raise_only_protocol_errors() -> None:
    from .mutate import mutations
    from .test_vectors import CONTROLS

    frames = [bytes.fromhex(frame["sealed"]) for control in CONTROLS for frame in control["frames"]]
    keys = {"s2a": bytes.fromhex(CONTROLS[0]["s2a"]), "a2s": bytes.fromhex(CONTROLS[0]["a2s"])}
    for data in mutations(frames, 1000, seed=12):
        for sending in ("s2a", "a2s"):
            try:
                message = hs.ControlCipher(keys, sending=sending).open(data)
            except ProtocolError:
                continue
            assert data in frames and isinstance(message, dict)  # only an unchanged frame opens
        try:
            length = hs.frame_length(data[:4].ljust(4, b"\0"))
        except ProtocolError:
            continue
        assert 0 <= length <= hs.MAX_CONTROL_FRAME_BYTES
