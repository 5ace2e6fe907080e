"""Write ``handshake-v2.json``: the shared test vectors of handshake protocol v2.

Every input is fixed (tokens, nonces, kernel ids, messages), and every expected output is computed with
``gateway_provisioners.core.handshake``, so running this script twice writes the same file. The JSON file is
committed; ``tests/unit/test_vectors.py`` checks that both the core and the agent (``launchers/gp_agent.py``)
reproduce every vector, and that this script still writes exactly the committed file.

Usage::

    python tests/vectors/make_vectors.py          # (re)write tests/vectors/handshake-v2.json
    python tests/vectors/make_vectors.py --check  # exit 1 if the committed file is out of date

Encodings: tokens are base64url (as in the agent's launch parameters), keys, nonces and sealed frames are lowercase
hex, envelopes are the exact one-line strings an agent sends.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

from gateway_provisioners.core.handshake import (
    PROTOCOL_VERSION,
    ControlCipher,
    control_keys,
    encode_token,
    payload_key,
    seal_payload,
)

VECTORS_FILE = Path(__file__).with_name("handshake-v2.json")

TOKEN_A = bytes(range(32))
TOKEN_B = bytes(range(255, 223, -1))
KERNEL_A = "3f2a1c6e-8d7b-4e5f-9a0b-1c2d3e4f5a6b"
KERNEL_B = "9b8e7d6c-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
KERNEL_UNICODE = "kernel-ü-日本"  # kernel ids are encoded as UTF-8 in the associated data and key derivation

READY_INFO: dict[str, Any] = {
    "status": "ready",
    "ip": "10.1.2.3",
    "transport": "tcp",
    "signature_scheme": "hmac-sha256",
    "kernel_name": "python3",
    "key": "5f1c2e0a-6b7d-4c8e-9f0a-1b2c3d4e5f60",
    "shell_port": 40001,
    "iopub_port": 40002,
    "stdin_port": 40003,
    "hb_port": 40004,
    "control_port": 40005,
    "agent_port": 40000,
    "pid": 4242,
    "pgid": 4242,
    "hostname": "node-7",
    "agent_version": "0.1.0",
}
FAILED_INFO: dict[str, Any] = {
    "status": "failed",
    "exit_code": 1,
    "reason": "the kernel exited during start-up with code 1",
    "log_tail": ["Traceback (most recent call last):", "ModuleNotFoundError: No module named 'ipykernel'"],
}
UNICODE_INFO: dict[str, Any] = {**READY_INFO, "kernel_name": "python3-ü", "hostname": "hôte-日本"}

PAYLOADS = [
    ("ready", TOKEN_A, KERNEL_A, bytes(range(12)), READY_INFO),
    ("failed-status", TOKEN_B, KERNEL_B, bytes([0xFF] * 12), FAILED_INFO),
    ("unicode-kernel-id", TOKEN_A, KERNEL_UNICODE, bytes(12), UNICODE_INFO),
]

CONTROLS = [
    ("ascii", TOKEN_A, KERNEL_A, bytes(range(16)), bytes(range(16, 32))),
    ("unicode-kernel-id", TOKEN_B, KERNEL_UNICODE, bytes([0xAA] * 16), bytes([0x55] * 16)),
]
# Two frames per direction, counters 0 and 1. Key order matters: a frame seals the message as serialized in order.
S2A_MESSAGES: list[dict[str, Any]] = [{"op": "ping", "id": 1}, {"op": "signal", "id": 2, "signum": 2}]
A2S_MESSAGES: list[dict[str, Any]] = [
    {"ok": True, "kernel": "running", "pid": 4242, "exit_code": None, "reply": 1},
    {"event": "kernel-exited", "exit_code": 0, "log_tail": ["bye", "ünïcode"]},
]


def _flip_last_byte(b64: str) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 0x01
    return base64.b64encode(bytes(raw)).decode("ascii")


def _rejections(ready_envelope: str) -> list[dict[str, Any]]:
    """Envelopes a server must refuse, with the reply reason it must give (all relative to the "ready" vector)."""
    good = json.loads(ready_envelope)
    relabelled = {**good, "kernel_id": KERNEL_B}
    tampered = {**good, "ciphertext": _flip_last_byte(good["ciphertext"])}
    old_version = {**good, "gp": 1}
    no_version = {k: v for k, v in good.items() if k != "gp"}
    short_nonce = {**good, "nonce": base64.b64encode(bytes(8)).decode("ascii")}
    compact = {"separators": (",", ":")}
    cases = [
        ("relabelled-kernel-id", TOKEN_A, relabelled, "bad-seal"),
        ("wrong-token", TOKEN_B, good, "bad-seal"),
        ("tampered-ciphertext", TOKEN_A, tampered, "bad-seal"),
        ("protocol-1", TOKEN_A, old_version, "unsupported-version"),
        ("no-protocol-version", TOKEN_A, no_version, "unsupported-version"),
        ("short-nonce", TOKEN_A, short_nonce, "malformed"),
    ]
    return [
        {"name": name, "token": encode_token(token), "envelope": json.dumps(env, **compact), "reply": reply}
        for name, token, env, reply in cases
    ]


def build_vectors() -> dict[str, Any]:
    """All vectors as one JSON-serializable object (deterministic)."""
    payloads = []
    for name, token, kernel_id, nonce, info in PAYLOADS:
        payloads.append(
            {
                "name": name,
                "token": encode_token(token),
                "kernel_id": kernel_id,
                "nonce": nonce.hex(),
                "info": info,
                "payload_key": payload_key(token).hex(),
                "envelope": seal_payload(token, kernel_id, info, nonce=nonce),
            }
        )
    controls = []
    for name, token, kernel_id, agent_nonce, server_nonce in CONTROLS:
        keys = control_keys(token, kernel_id, agent_nonce, server_nonce)
        frames = []
        for direction, messages in (("s2a", S2A_MESSAGES), ("a2s", A2S_MESSAGES)):
            cipher = ControlCipher(keys, sending=direction)
            for counter, message in enumerate(messages):
                frames.append(
                    {
                        "direction": direction,
                        "counter": counter,
                        "message": message,
                        "sealed": cipher.seal(message).hex(),
                    }
                )
        controls.append(
            {
                "name": name,
                "token": encode_token(token),
                "kernel_id": kernel_id,
                "agent_nonce": agent_nonce.hex(),
                "server_nonce": server_nonce.hex(),
                "s2a": keys["s2a"].hex(),
                "a2s": keys["a2s"].hex(),
                "frames": frames,
            }
        )
    return {
        "protocol": PROTOCOL_VERSION,
        "about": "Handshake protocol v2 test vectors, written by tests/vectors/make_vectors.py; see docs/protocol.md",
        "payloads": payloads,
        "payload_rejections": _rejections(payloads[0]["envelope"]),
        "control": controls,
    }


def render(vectors: dict[str, Any]) -> str:
    return json.dumps(vectors, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the committed file differs")
    opts = parser.parse_args(argv)
    text = render(build_vectors())
    if opts.check:
        current = VECTORS_FILE.read_text(encoding="utf-8") if VECTORS_FILE.exists() else ""
        if current != text:
            print(f"{VECTORS_FILE} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    VECTORS_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {VECTORS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
