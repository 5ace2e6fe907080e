"""Handshake protocol v2: how connection info and control messages travel between server and agent.

The wire format is specified in ``docs/protocol.md``; the kernel-side agent (``launchers/gp_agent.py``) implements the
same rules independently, and both are checked against ``tests/vectors/handshake-v2.json``.

Summary:

* Per launch the server makes a random 32-byte *launch token* and hands it to the agent through the launch channel.
* The agent's connection payload is sealed with AES-256-GCM under ``HKDF-SHA256(token, info="gp/2 payload")`` with
  associated data ``"gp/2 payload\\0" + kernel_id``. A payload sealed for one kernel does not open as another's.
* Control messages (server → agent and back) are sealed under per-connection, per-direction keys derived from the
  token and two random nonces exchanged in the clear at connect time, with a counter in every frame that must
  increase by exactly one: a frame cannot be replayed, reordered or moved to another connection.

Every parser here takes bytes from the network: whatever they hold, the only exceptions that come out are
:class:`ProtocolError` and its subclasses (tests/unit/test_handshake.py fuzzes them).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import ProtocolError, ProtocolVersionMismatch
from .logsafe import printable

PROTOCOL_VERSION = 2
SUPPORTED_VERSIONS = (2,)
TOKEN_BYTES = 32
NONCE_BYTES = 12
MAX_PAYLOAD_BYTES = 64 * 1024  # one envelope line, callback and stdout modes
MAX_CONTROL_FRAME_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32  # no message of this protocol nests deeper than 3; a deeper one is refused like bad JSON
HELLO_NONCE_BYTES = 16
STDOUT_PREFIX = "GP-CONNECTION-INFO "  # stdout mode: the agent prints this prefix, then the envelope
AGENT_LOG_PREFIX = "GP-AGENT-LOG "  # the agent prints this prefix, its kernel id and the path of the kernel's log

PAYLOAD_INFO = b"gp/2 payload"
CONTROL_INFO = {"s2a": b"gp/2 control s2a", "a2s": b"gp/2 control a2s"}


class Reply:
    """Reason codes the response listener sends back to an agent (``{"gp": 2, "status": ..., "reason": ...}``)."""

    ACCEPTED = "accepted"
    MALFORMED = "malformed"  # not a v2 envelope: bad JSON, missing fields, bad base64
    UNSUPPORTED_VERSION = "unsupported-version"
    UNKNOWN_KERNEL = "unknown-kernel"  # no launch is waiting for this kernel id
    BAD_SEAL = "bad-seal"  # authentication failed: wrong token, tampered, or sealed for another kernel
    REPLAYED = "replayed"  # this kernel's payload was already accepted
    TOO_LARGE = "too-large"
    TIMEOUT = "timeout"  # the connection sent no complete payload before the read deadline
    BUSY = "busy"  # the listener serves its maximum number of connections; try again


def new_token() -> bytes:
    """A fresh random launch token."""
    return os.urandom(TOKEN_BYTES)


def encode_token(token: bytes) -> str:
    return base64.urlsafe_b64encode(token).decode("ascii")


def decode_token(text: str) -> bytes:
    try:
        token = base64.urlsafe_b64decode(text.strip().encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise ProtocolError("launch token is not valid base64url") from exc
    if len(token) != TOKEN_BYTES:
        raise ProtocolError(f"launch token must be {TOKEN_BYTES} bytes, got {len(token)}")
    return token


def _hkdf(token: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(token)


def payload_key(token: bytes) -> bytes:
    """The AES-256 key that seals this launch's connection payload."""
    return _hkdf(token, PAYLOAD_INFO)


def payload_aad(kernel_id: str) -> bytes:
    return PAYLOAD_INFO + b"\0" + kernel_id.encode("utf-8")


def check_version(version: Any) -> None:
    """Raise :class:`ProtocolVersionMismatch` with a clear message unless ``version`` is spoken here."""
    if not _is_supported(version):
        raise ProtocolVersionMismatch(
            f"peer speaks gateway-provisioners protocol {describe(version)}, this side speaks "
            f"{list(SUPPORTED_VERSIONS)}: install matching versions of the agent and the server"
        )


def _is_supported(version: Any) -> bool:
    # Exactly an integer: 2.0 and true compare equal to numbers in Python, but are not the protocol's version.
    return type(version) is int and version in SUPPORTED_VERSIONS


def describe(value: Any) -> str:
    """A short, one-line account of a value a peer sent, for messages: never a repr of an arbitrary structure."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return printable(repr(value), 60)
    return f"a JSON {'array' if isinstance(value, list) else 'object' if isinstance(value, dict) else 'value'}"


def load_json(data: bytes | str, what: str) -> Any:
    """``json.loads`` for bytes from the network: any failure, deep nesting included, is a :class:`ProtocolError`.

    Python's parser recurses once per level and raises ``RecursionError`` on deep input (60 KB of ``[``); that, and
    anything nested deeper than :data:`MAX_JSON_DEPTH`, is refused here, so no later code walks a deep structure.
    """
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"{what} is not JSON") from exc
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise ProtocolError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def seal_payload(token: bytes, kernel_id: str, info: dict[str, Any], nonce: bytes | None = None) -> str:
    """The one-line envelope an agent sends: JSON ``{"gp", "kernel_id", "nonce", "ciphertext"}``."""
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    plaintext = json.dumps(info, sort_keys=True, separators=(",", ":")).encode("utf-8")
    ciphertext = AESGCM(payload_key(token)).encrypt(nonce, plaintext, payload_aad(kernel_id))
    envelope = {
        "gp": PROTOCOL_VERSION,
        "kernel_id": kernel_id,
        "nonce": base64.b64encode(nonce).decode("ascii"),
        "ciphertext": base64.b64encode(ciphertext).decode("ascii"),
    }
    return json.dumps(envelope, separators=(",", ":"))


@dataclass(frozen=True)
class Envelope:
    """A parsed, still sealed payload."""

    kernel_id: str
    nonce: bytes
    ciphertext: bytes


class EnvelopeError(ProtocolError):
    """An envelope that cannot be accepted; ``code`` is the :class:`Reply` reason sent back."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def parse_envelope(data: bytes | str) -> Envelope:
    """Parse the envelope framing (not the seal). Raises :class:`EnvelopeError` with a reply code."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise EnvelopeError(Reply.TOO_LARGE, f"payload of {len(data)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        obj = load_json(data, "payload")
    except ProtocolError as exc:
        if _is_v1_frame(data):
            raise EnvelopeError(Reply.UNSUPPORTED_VERSION, "payload is an older launcher's v1 frame") from exc
        raise EnvelopeError(Reply.MALFORMED, str(exc)) from exc
    if not isinstance(obj, dict):
        raise EnvelopeError(Reply.MALFORMED, "payload is not a JSON object")
    if "gp" not in obj:
        raise EnvelopeError(Reply.UNSUPPORTED_VERSION, "payload has no protocol version (an older launcher?)")
    if not _is_supported(obj["gp"]):
        raise EnvelopeError(Reply.UNSUPPORTED_VERSION, f"payload speaks protocol {describe(obj['gp'])}")
    kernel_id, nonce, ciphertext = obj.get("kernel_id"), obj.get("nonce"), obj.get("ciphertext")
    if not (isinstance(kernel_id, str) and isinstance(nonce, str) and isinstance(ciphertext, str)) or not kernel_id:
        raise EnvelopeError(Reply.MALFORMED, "payload lacks kernel_id, nonce or ciphertext")
    if not _is_utf8(kernel_id):
        raise EnvelopeError(Reply.MALFORMED, "payload kernel_id is not valid Unicode text")
    try:
        raw_nonce = base64.b64decode(nonce, validate=True)
        raw_ciphertext = base64.b64decode(ciphertext, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError(Reply.MALFORMED, "payload nonce or ciphertext is not base64") from exc
    if len(raw_nonce) != NONCE_BYTES:
        raise EnvelopeError(Reply.MALFORMED, f"payload nonce must be {NONCE_BYTES} bytes")
    return Envelope(kernel_id, raw_nonce, raw_ciphertext)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")  # JSON may escape a lone surrogate ("\\ud800"), which no UTF-8 key or seal can hold
    except UnicodeEncodeError:
        return False
    return True


def _is_v1_frame(data: bytes | str) -> bool:
    """The older packages' frame: base64 of a JSON object with "version" (answered with a version error)."""
    try:
        obj = load_json(base64.b64decode(data, validate=True), "v1 frame")
    except (binascii.Error, ValueError, ProtocolError):
        return False
    return isinstance(obj, dict) and "version" in obj


def open_payload(token: bytes, envelope: Envelope) -> dict[str, Any]:
    """Authenticate and decrypt an envelope with the launch's token. Raises :class:`EnvelopeError` (bad-seal)."""
    try:
        plaintext = AESGCM(payload_key(token)).decrypt(
            envelope.nonce, envelope.ciphertext, payload_aad(envelope.kernel_id)
        )
    except InvalidTag as exc:
        raise EnvelopeError(Reply.BAD_SEAL, "payload failed authentication") from exc
    try:
        info = load_json(plaintext, "sealed payload")
    except ProtocolError:
        info = None
    if not isinstance(info, dict):
        raise EnvelopeError(Reply.MALFORMED, "sealed payload is not a JSON object")
    return info


def make_reply(status: str, reason: str | None = None) -> bytes:
    """A listener's answer line to the agent."""
    reply: dict[str, Any] = {"gp": PROTOCOL_VERSION, "status": "accepted" if status == Reply.ACCEPTED else "rejected"}
    if status != Reply.ACCEPTED:
        reply["reason"] = status
        if reason:
            reply["detail"] = reason
        if status == Reply.UNSUPPORTED_VERSION:
            reply["supported"] = list(SUPPORTED_VERSIONS)
    return json.dumps(reply, separators=(",", ":")).encode("utf-8") + b"\n"


# --- control channel ------------------------------------------------------------------------------------------------


def control_keys(token: bytes, kernel_id: str, agent_nonce: bytes, server_nonce: bytes) -> dict[str, bytes]:
    """The two per-connection keys: ``s2a`` seals server → agent frames, ``a2s`` agent → server frames."""
    salt = agent_nonce + server_nonce
    suffix = b"\0" + kernel_id.encode("utf-8")
    return {direction: _hkdf(token, info + suffix, salt) for direction, info in CONTROL_INFO.items()}


class ControlCipher:
    """Seals frames in one direction and opens frames of the other, enforcing strictly consecutive counters.

    A sealed frame body is ``counter (8 bytes, big-endian) || AES-256-GCM(ciphertext || tag)`` with the nonce
    ``4 zero bytes || counter`` and the associated data ``direction || counter``. The first frame in each direction
    has counter 0.
    """

    def __init__(self, keys: dict[str, bytes], *, sending: str) -> None:
        if sending not in CONTROL_INFO:
            raise ValueError(f"direction must be one of {sorted(CONTROL_INFO)}")
        self._sending = sending
        self._receiving = "a2s" if sending == "s2a" else "s2a"
        self._seal = AESGCM(keys[self._sending])
        self._open = AESGCM(keys[self._receiving])
        self._send_counter = 0
        self._recv_counter = 0

    def seal(self, message: dict[str, Any]) -> bytes:
        counter = struct.pack(">Q", self._send_counter)
        body = json.dumps(message, separators=(",", ":")).encode("utf-8")
        sealed = self._seal.encrypt(b"\0\0\0\0" + counter, body, self._sending.encode() + counter)
        self._send_counter += 1
        return counter + sealed

    def open(self, frame: bytes) -> dict[str, Any]:
        if len(frame) < 8 + 16:
            raise ProtocolError("control frame too short")
        counter = frame[:8]
        if struct.unpack(">Q", counter)[0] != self._recv_counter:
            raise ProtocolError("control frame out of sequence (replayed or reordered)")
        try:
            body = self._open.decrypt(b"\0\0\0\0" + counter, frame[8:], self._receiving.encode() + counter)
        except InvalidTag as exc:
            raise ProtocolError("control frame failed authentication") from exc
        self._recv_counter += 1
        try:
            message = load_json(body, "control message")
        except ProtocolError:
            message = None
        if not isinstance(message, dict):
            raise ProtocolError("control message is not a JSON object")
        return message


def frame(data: bytes) -> bytes:
    """Length-prefix one control frame (4 bytes, big-endian)."""
    if len(data) > MAX_CONTROL_FRAME_BYTES:
        raise ProtocolError(f"control frame of {len(data)} bytes exceeds {MAX_CONTROL_FRAME_BYTES}")
    return struct.pack(">I", len(data)) + data


def frame_length(header: bytes) -> int:
    if len(header) != 4:
        raise ProtocolError(f"control frame header must be 4 bytes, got {len(header)}")
    length: int = struct.unpack(">I", header)[0]
    if length > MAX_CONTROL_FRAME_BYTES:
        raise ProtocolError(f"control frame of {length} bytes exceeds {MAX_CONTROL_FRAME_BYTES}")
    return length


def agent_hello(kernel_id: str, nonce: bytes) -> bytes:
    """The agent's plaintext hello body (the reference agent writes its own; tests and other agents may use this)."""
    return json.dumps(
        {"gp": PROTOCOL_VERSION, "kernel_id": kernel_id, "nonce": base64.b64encode(nonce).decode("ascii")}
    ).encode("utf-8")


def parse_agent_hello(data: bytes, kernel_id: str) -> bytes:
    """Check an agent's hello for ``kernel_id`` and return its 16-byte nonce. Raises :class:`ProtocolError`.

    The hello arrives before any authentication, from whatever process holds the agent's port.
    """
    hello = load_json(data, "agent hello")
    if not isinstance(hello, dict):
        raise ProtocolError("agent hello is not a JSON object")
    check_version(hello.get("gp"))
    if hello.get("kernel_id") != kernel_id:
        raise ProtocolError(f"the agent serves kernel {describe(hello.get('kernel_id'))}, not this one")
    return _hello_nonce(hello.get("nonce"), "agent")


def server_hello(nonce: bytes) -> bytes:
    """The server's plaintext hello body."""
    return json.dumps({"gp": PROTOCOL_VERSION, "nonce": base64.b64encode(nonce).decode("ascii")}).encode("utf-8")


def _hello_nonce(value: Any, who: str) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"{who} hello nonce is {describe(value)}, not a base64 string")
    try:
        nonce = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"{who} hello nonce is not base64") from exc
    if len(nonce) != HELLO_NONCE_BYTES:
        raise ProtocolError(f"{who} nonce must be {HELLO_NONCE_BYTES} bytes, got {len(nonce)}")
    return nonce
