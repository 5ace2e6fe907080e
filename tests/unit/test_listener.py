"""The response listener against real TCP clients: every reply code, the broker's state, and floods of bad peers.

Each test runs a real :class:`ResponseListener` on 127.0.0.1 (port 0) and talks to it with ``asyncio.open_connection``
the way an agent in callback mode does: one envelope line out, one reply line back, then the listener closes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import json
import logging
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from gateway_provisioners.core.broker import ConnectionBroker
from gateway_provisioners.core.handshake import MAX_PAYLOAD_BYTES, encode_token, make_reply, new_token, seal_payload
from gateway_provisioners.listener import ResponseListener, shared_broker, shared_listener

HOST = "127.0.0.1"
WAIT = 5.0  # generous upper bound for anything that should happen at once; tests never wait this long when passing
AGENT_PATH = Path(__file__).resolve().parents[2] / "launchers" / "gp_agent.py"


# --- helpers ----------------------------------------------------------------------------------------------------------


def connection_info() -> dict[str, Any]:
    """What an agent reports: the kernel's ports and its HMAC key among them."""
    return {
        "status": "ready",
        "ip": "10.1.2.3",
        "shell_port": 50001,
        "iopub_port": 50002,
        "stdin_port": 50003,
        "hb_port": 50004,
        "control_port": 50005,
        "agent_port": 50006,
        "key": str(uuid.uuid4()),
        "transport": "tcp",
        "signature_scheme": "hmac-sha256",
    }


@dataclass
class Launch:
    """One waiting launch: its kernel id, its token, the broker's future and the info its agent will send."""

    kernel_id: str
    token: bytes
    future: asyncio.Future[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=connection_info)

    def envelope(self, token: bytes | None = None) -> str:
        return seal_payload(self.token if token is None else token, self.kernel_id, self.info)

    def line(self, token: bytes | None = None) -> bytes:
        return self.envelope(token).encode() + b"\n"


def expect(broker: ConnectionBroker, kernel_id: str | None = None, token: bytes | None = None) -> Launch:
    kernel_id = kernel_id or f"kernel-{uuid.uuid4()}"
    token = new_token() if token is None else token
    return Launch(kernel_id, token, broker.expect(kernel_id, token))


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def read_reply(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The one reply line, after which the listener must have closed the connection."""
    line = await asyncio.wait_for(reader.readline(), WAIT)
    assert line.endswith(b"\n"), f"no complete reply line: {line!r}"
    assert await asyncio.wait_for(reader.read(), WAIT) == b"", "the listener sends one line, then closes"
    reply = json.loads(line)
    assert reply["gp"] == 2
    return reply


async def exchange(listener: ResponseListener, data: bytes, *, eof: bool = False) -> dict[str, Any]:
    """Send ``data`` on a new connection (then half-close it if ``eof``) and return the parsed reply."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, listener.port), WAIT)
    try:
        writer.write(data)
        if eof:
            writer.write_eof()
        await writer.drain()
        return await read_reply(reader)
    finally:
        await close(writer)


def assert_accepted(reply: dict[str, Any]) -> None:
    assert reply == {"gp": 2, "status": "accepted"}, reply


def assert_rejected(reply: dict[str, Any], reason: str) -> None:
    assert reply["status"] == "rejected", reply
    assert reply["reason"] == reason, reply


def assert_pending(broker: ConnectionBroker, launch: Launch) -> None:
    assert broker.is_waiting(launch.kernel_id)
    assert not launch.future.done()


async def accept_now(broker: ConnectionBroker, listener: ResponseListener, launch: Launch) -> None:
    """A correct payload for ``launch`` is accepted and resolves its future with the info."""
    assert_accepted(await exchange(listener, launch.line()))
    assert await asyncio.wait_for(launch.future, WAIT) == launch.info
    assert not broker.is_waiting(launch.kernel_id)


@pytest.fixture
def broker() -> ConnectionBroker:
    return ConnectionBroker()


# --- accepted ---------------------------------------------------------------------------------------------------------


async def test_legitimate_payload_is_accepted_and_resolves_the_launch(broker: ConnectionBroker) -> None:
    launch = expect(broker)
    other = expect(broker)
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        assert listener.port != 0
        assert listener.address == f"{HOST}:{listener.port}"
        reply = await exchange(listener, launch.line())
        assert_accepted(reply)
        assert "reason" not in reply
        assert await asyncio.wait_for(launch.future, WAIT) == launch.info
        assert not broker.is_waiting(launch.kernel_id)
        assert_pending(broker, other)  # only the launch the payload names is resolved


async def test_payload_without_newline_then_eof_is_accepted(broker: ConnectionBroker) -> None:
    launch = expect(broker)
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        assert_accepted(await exchange(listener, launch.envelope().encode(), eof=True))
        assert await asyncio.wait_for(launch.future, WAIT) == launch.info


# --- malformed, truncated, oversized ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\xff\xfe garbage \x80\x81",
        b"not json at all",
        b"[1, 2, 3]",
        b'{"gp": 2}',
        b'{"gp": 2, "kernel_id": "k", "nonce": "!!!not base64!!!", "ciphertext": "AAAA"}',
        b'{"gp": 2, "kernel_id": "k", "nonce": "AAAA", "ciphertext": "AAAA"}',  # nonce of 3 bytes
    ],
    ids=["binary", "text", "json-array", "no-fields", "bad-base64", "short-nonce"],
)
async def test_garbage_is_rejected_malformed(broker: ConnectionBroker, garbage: bytes) -> None:
    launch = expect(broker)
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        assert_rejected(await exchange(listener, garbage + b"\n"), "malformed")
        assert_pending(broker, launch)
        await accept_now(broker, listener, launch)


async def test_empty_connection_closed_at_once_is_rejected_malformed(broker: ConnectionBroker) -> None:
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        reply = await exchange(listener, b"", eof=True)
        assert_rejected(reply, "malformed")


async def test_truncated_payload_is_rejected_malformed(broker: ConnectionBroker) -> None:
    launch = expect(broker)
    envelope = launch.envelope().encode()
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        reply = await exchange(listener, envelope[: len(envelope) // 2], eof=True)
        assert_rejected(reply, "malformed")
        assert_pending(broker, launch)
        await accept_now(broker, listener, launch)  # the real agent can still deliver


# The sizes make the listener read every byte before it decides, so its reply cannot be lost to a reset.
@pytest.mark.parametrize(
    "payload",
    [b"x" * (MAX_PAYLOAD_BYTES + 2), b"x" * (MAX_PAYLOAD_BYTES + 1) + b"\n"],
    ids=["without-newline", "with-newline"],
)
async def test_oversized_payload_is_rejected_too_large(broker: ConnectionBroker, payload: bytes) -> None:
    assert len(payload.strip()) > MAX_PAYLOAD_BYTES
    launch = expect(broker)
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        assert_rejected(await exchange(listener, payload), "too-large")
        assert_pending(broker, launch)
        await accept_now(broker, listener, launch)  # the listener serves the next connection


async def test_oversized_sealed_envelope_is_rejected_too_large(broker: ConnectionBroker) -> None:
    launch = expect(broker)
    launch.info["padding"] = "p" * (MAX_PAYLOAD_BYTES // 2)
    envelope = launch.envelope()
    # A well-formed, correctly sealed envelope, padded with JSON whitespace to one byte over the limit.
    envelope = "{" + " " * (MAX_PAYLOAD_BYTES + 1 - len(envelope)) + envelope[1:]
    assert len(envelope) == MAX_PAYLOAD_BYTES + 1
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        assert_rejected(await exchange(listener, envelope.encode() + b"\n"), "too-large")
        assert_pending(broker, launch)
        assert_accepted(await exchange(listener, ("{" + envelope[2:]).encode() + b"\n"))  # at the limit
        assert await asyncio.wait_for(launch.future, WAIT) == launch.info


# --- protocol versions ------------------------------------------------------------------------------------------------


async def test_envelope_of_protocol_1_is_rejected_unsupported_version(broker: ConnectionBroker) -> None:
    launch = expect(broker)
    envelope = json.loads(launch.envelope())
    envelope["gp"] = 1
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        reply = await exchange(listener, json.dumps(envelope).encode() + b"\n")
        assert_rejected(reply, "unsupported-version")
        assert reply["supported"] == [2]
        assert_pending(broker, launch)


async def test_payload_without_protocol_version_is_rejected_unsupported_version(broker: ConnectionBroker) -> None:
    launch = expect(broker)
    # The fields of an older launcher's frame, with no "gp": answered with a version error, not "malformed".
    old_frame = {"version": 1, "key": base64.b64encode(b"k" * 16).decode(), "conn_info": "c2VhbGVk"}
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        reply = await exchange(listener, json.dumps(old_frame).encode(), eof=True)
        assert_rejected(reply, "unsupported-version")
        assert reply["supported"] == [2]
        assert_pending(broker, launch)


async def test_older_launchers_base64_frame_is_rejected_unsupported_version(broker: ConnectionBroker) -> None:
    launch = expect(broker)
    # What the older packages' launchers send: base64 of their JSON frame, no newline, then they close.
    old_frame = {"version": 1, "key": base64.b64encode(b"k" * 16).decode(), "conn_info": "c2VhbGVk"}
    blob = base64.b64encode(json.dumps(old_frame).encode())
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        reply = await exchange(listener, blob, eof=True)
        assert_rejected(reply, "unsupported-version")
        assert_pending(broker, launch)


@pytest.mark.parametrize("size", [1_000_000, 5_000_000])
async def test_far_oversized_payload_still_gets_its_reply(broker: ConnectionBroker, size: int) -> None:
    # The listener stops reading at the cap; the peer must still get the reply instead of a connection reset.
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, listener.port), WAIT)
        try:
            writer.write(b"x" * size)
            line = await asyncio.wait_for(reader.readline(), WAIT)
        finally:
            writer.close()
        assert_rejected(json.loads(line), "too-large")


# --- seals, kernels, replays ------------------------------------------------------------------------------------------


async def test_wrong_token_is_rejected_bad_seal_and_the_launch_stays_pending(broker: ConnectionBroker) -> None:
    launch = expect(broker)
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        assert_rejected(await exchange(listener, launch.line(token=new_token())), "bad-seal")
        assert_pending(broker, launch)
        await accept_now(broker, listener, launch)


@pytest.mark.parametrize("same_token", [True, False], ids=["same-token", "own-tokens"])
async def test_payload_moved_to_another_kernel_is_rejected_bad_seal(broker: ConnectionBroker, same_token: bool) -> None:
    kernel_a = expect(broker)
    # With one token for both, only the kernel id bound into the seal tells them apart.
    kernel_b = expect(broker, token=kernel_a.token if same_token else None)
    moved = json.loads(kernel_a.envelope())
    moved["kernel_id"] = kernel_b.kernel_id
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        assert_rejected(await exchange(listener, json.dumps(moved).encode() + b"\n"), "bad-seal")
        assert_pending(broker, kernel_a)
        assert_pending(broker, kernel_b)
        await accept_now(broker, listener, kernel_b)
        await accept_now(broker, listener, kernel_a)


async def test_payload_for_unknown_kernel_is_rejected(broker: ConnectionBroker) -> None:
    waiting = expect(broker)
    stranger = Launch(f"kernel-{uuid.uuid4()}", new_token(), asyncio.get_running_loop().create_future())
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        assert_rejected(await exchange(listener, stranger.line()), "unknown-kernel")
        assert not broker.is_waiting(stranger.kernel_id)
        assert_pending(broker, waiting)


async def test_payload_for_a_forgotten_launch_is_rejected_unknown_kernel(broker: ConnectionBroker) -> None:
    launch = expect(broker)
    broker.forget(launch.kernel_id)
    assert launch.future.cancelled()
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        assert_rejected(await exchange(listener, launch.line()), "unknown-kernel")


async def test_replayed_payload_is_rejected(broker: ConnectionBroker) -> None:
    launch = expect(broker)
    line = launch.line()
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        assert_accepted(await exchange(listener, line))
        assert await asyncio.wait_for(launch.future, WAIT) == launch.info
        assert_rejected(await exchange(listener, line), "replayed")
        assert_rejected(await exchange(listener, launch.line()), "replayed")  # a fresh seal of the same launch too
        assert not broker.is_waiting(launch.kernel_id)
        assert launch.future.result() == launch.info


# --- deadlines, floods, limits ----------------------------------------------------------------------------------------


async def test_silent_connection_times_out_without_holding_up_a_launch(broker: ConnectionBroker) -> None:
    read_timeout = 0.5
    launch = expect(broker)
    async with ResponseListener(broker, HOST, 0, read_timeout=read_timeout) as listener:
        start = time.monotonic()
        silent_reader, silent_writer = await asyncio.open_connection(HOST, listener.port)
        try:
            silent_reply = asyncio.ensure_future(read_reply(silent_reader))
            reply = await exchange(listener, launch.line())
            accepted_after = time.monotonic() - start
            assert_accepted(reply)
            assert not silent_reply.done(), "the silent connection was answered before the launch"
            assert accepted_after < read_timeout / 2
            assert await asyncio.wait_for(launch.future, WAIT) == launch.info

            timed_out = await asyncio.wait_for(silent_reply, WAIT)  # read_reply also checks the close
            assert_rejected(timed_out, "timeout")
            assert time.monotonic() - start >= read_timeout * 0.9
        finally:
            await close(silent_writer)


async def test_flood_of_bad_connections_does_not_delay_a_legitimate_launch(broker: ConnectionBroker) -> None:
    read_timeout = 2.0
    flood = 50
    launch = expect(broker)
    connected = 0
    all_connected = asyncio.Event()
    release_silent = asyncio.Event()
    payloads = {
        "garbage": b"\x00\x01 definitely not an envelope \xff\n",
        "oversized": b"x" * (MAX_PAYLOAD_BYTES + 2),
        "silent": b"",
    }
    expected = {"garbage": "malformed", "oversized": "too-large", "silent": "malformed"}

    async def bad_client(kind: str) -> dict[str, Any]:
        nonlocal connected
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, listener.port), WAIT)
        try:
            writer.write(payloads[kind])
            await writer.drain()
            connected += 1
            if connected == flood:
                all_connected.set()
            if kind == "silent":
                await release_silent.wait()
                writer.write_eof()  # give up without sending anything: the listener answers "empty payload"
            return await read_reply(reader)
        finally:
            await close(writer)

    async with ResponseListener(broker, HOST, 0, read_timeout=read_timeout) as listener:
        kinds = [("garbage", "oversized", "silent")[i % 3] for i in range(flood)]
        clients = [asyncio.ensure_future(bad_client(kind)) for kind in kinds]
        try:
            await asyncio.wait_for(all_connected.wait(), WAIT)
            start = time.monotonic()
            reply = await exchange(listener, launch.line())
            elapsed = time.monotonic() - start
            assert_accepted(reply)
            assert elapsed < read_timeout  # served before the silent peers' deadline freed anything
            assert await asyncio.wait_for(launch.future, WAIT) == launch.info
            silent = [client for client, kind in zip(clients, kinds, strict=True) if kind == "silent"]
            assert silent and not any(client.done() for client in silent), "silent connections still held open"

            release_silent.set()
            replies = await asyncio.wait_for(asyncio.gather(*clients), WAIT)
        finally:
            for client in clients:
                client.cancel()
        for kind, bad_reply in zip(kinds, replies, strict=True):
            assert_rejected(bad_reply, expected[kind])
        assert broker.accept(launch.envelope()) == ("replayed", "payload already accepted")

        # Still serving after the flood.
        await accept_now(broker, listener, expect(broker))


async def test_connections_beyond_max_connections_make_the_oldest_give_way(broker: ConnectionBroker) -> None:
    launch = expect(broker)
    async with ResponseListener(broker, HOST, 0, read_timeout=5, max_connections=2) as listener:
        silent = [await asyncio.open_connection(HOST, listener.port) for _ in range(2)]
        try:
            # A third connection is served; the oldest silent one is answered "busy" and closed to make room.
            await accept_now(broker, listener, launch)
            assert_rejected(await read_reply(silent[0][0]), "busy")
            assert listener.connections <= 2

            # The other silent connection still has its slot, and is judged when it gives up.
            second_reader, second_writer = silent[1]
            second_writer.write_eof()
            assert_rejected(await read_reply(second_reader), "malformed")
        finally:
            for _, writer in silent:
                await close(writer)


# --- ports ------------------------------------------------------------------------------------------------------------


async def test_taken_port_is_retried_on_the_next_ports(broker: ConnectionBroker) -> None:
    launch = expect(broker)
    async with ResponseListener(broker, HOST, 0) as first:
        taken = first.port
        async with ResponseListener(broker, HOST, taken, port_retries=3, read_timeout=5) as second:
            assert taken < second.port <= taken + 3
            assert second.address == f"{HOST}:{second.port}"
            await accept_now(broker, second, launch)  # really serving on the port it reports

        no_retries = ResponseListener(broker, HOST, taken, port_retries=0)
        with pytest.raises(OSError, match="GP_RESPONSE_PORT") as raised:
            await no_retries.start()
        assert str(taken) in str(raised.value)


# --- logging ----------------------------------------------------------------------------------------------------------


async def test_rejections_log_kernel_and_reason_but_no_secrets(
    broker: ConnectionBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway_provisioners")
    launch = expect(broker)
    forged_token = new_token()
    forged = launch.envelope(token=forged_token)
    sealed = json.loads(forged)
    genuine = json.loads(launch.envelope())
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        assert_rejected(await exchange(listener, forged.encode() + b"\n"), "bad-seal")
        await accept_now(broker, listener, launch)

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logged = "\n".join(formatter.format(record) for record in caplog.records)
    secrets = {
        "launch token (base64url)": encode_token(launch.token),
        "launch token (base64)": base64.b64encode(launch.token).decode(),
        "launch token (hex)": launch.token.hex(),
        "forging token (base64url)": encode_token(forged_token),
        "forged ciphertext": sealed["ciphertext"],
        "genuine ciphertext": genuine["ciphertext"],
        "kernel HMAC key": launch.info["key"],
    }
    for what, secret in secrets.items():
        assert secret not in logged, f"the {what} is in the log"
    rejections = [r for r in caplog.records if r.name.startswith("gateway_provisioners") and "bad-seal" in r.message]
    assert len(rejections) == 1
    assert launch.kernel_id in rejections[0].getMessage()
    assert rejections[0].levelno == logging.WARNING


# --- the real agent's call-back path ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gp_agent_under_test", AGENT_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def agent_envelope(agent_module: ModuleType, launch: Launch, token: bytes | None = None) -> str:
    """Seal as the agent does, with the token it decodes from the launch parameters."""
    agent_token = agent_module.decode_token(encode_token(launch.token if token is None else token))
    return agent_module.Protocol().seal_payload(agent_token, launch.kernel_id, launch.info)


def agent_stand_in(listener: ResponseListener) -> SimpleNamespace:
    """``Agent.call_back`` only needs the launch parameters' response address."""
    return SimpleNamespace(params={"response_address": listener.address})


async def test_agent_call_back_is_accepted(broker: ConnectionBroker, agent_module: ModuleType) -> None:
    launch = expect(broker)
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        envelope = agent_envelope(agent_module, launch)
        await asyncio.wait_for(agent_module.Agent.call_back(agent_stand_in(listener), envelope), WAIT)
        assert await asyncio.wait_for(launch.future, WAIT) == launch.info
        assert not broker.is_waiting(launch.kernel_id)


async def test_agent_call_back_reports_a_rejection(broker: ConnectionBroker, agent_module: ModuleType) -> None:
    launch = expect(broker)
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        envelope = agent_envelope(agent_module, launch, token=new_token())
        with pytest.raises(RuntimeError, match="rejected the connection info: bad-seal"):
            await asyncio.wait_for(agent_module.Agent.call_back(agent_stand_in(listener), envelope), WAIT)
        assert_pending(broker, launch)


async def test_agent_of_another_protocol_version_is_told_what_the_server_speaks(
    broker: ConnectionBroker, agent_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch = expect(broker)
    monkeypatch.setattr(agent_module, "PROTOCOL_VERSION", 1)
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        envelope = agent_envelope(agent_module, launch)
        assert json.loads(envelope)["gp"] == 1
        with pytest.raises(RuntimeError, match=r"speaks protocol \[2\]"):
            await asyncio.wait_for(agent_module.Agent.call_back(agent_stand_in(listener), envelope), WAIT)
        assert_pending(broker, launch)


def test_listener_of_a_finished_event_loop_frees_its_port() -> None:
    # Each asyncio.run() is a new loop with its own shared listener; one left by a finished loop must not keep its port.
    async def start_shared() -> tuple[ResponseListener, ConnectionBroker]:
        return await shared_listener(ip="127.0.0.1", port=0), shared_broker()

    first, first_broker = asyncio.run(start_shared())
    port = int(first.address.rsplit(":", 1)[1])

    async def rebind() -> tuple[ResponseListener, ConnectionBroker]:
        listener, broker = await start_shared()  # drops the finished loop's share
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))  # the port is free again
        finally:
            probe.close()
        return listener, broker

    second, second_broker = asyncio.run(rebind())
    assert second is not first and second_broker is not first_broker


# --- hardening (issue 11): saturation, descriptors, log forging, deep nesting --------------------------------------


async def test_idle_connections_filling_the_listener_do_not_lock_out_an_agent(broker: ConnectionBroker) -> None:
    # An attacker holds every slot with connections that send nothing; a real agent must still get through at once.
    launch = expect(broker)
    async with ResponseListener(broker, HOST, 0, read_timeout=10, max_connections=8) as listener:
        idle = [await asyncio.open_connection(HOST, listener.port) for _ in range(20)]
        try:
            start = time.monotonic()
            await accept_now(broker, listener, launch)
            assert time.monotonic() - start < 2.0  # far below the idle connections' 10 s read deadline
            # The oldest idle connections made room: they were answered "busy" and closed, not left hanging.
            first_reader, _ = idle[0]
            assert_rejected(await read_reply(first_reader), "busy")
        finally:
            for _, writer in idle:
                await close(writer)


FORGED_LINE = "2026-01-01 00:00:00 INFO gateway_provisioners.broker kernel admin accepted"


@pytest.mark.parametrize("where", ["kernel_id", "gp"])
async def test_network_values_cannot_forge_log_lines(
    broker: ConnectionBroker, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway_provisioners")
    launch = expect(broker)
    envelope = json.loads(launch.envelope())
    envelope[where] = f"x\r\n{FORGED_LINE}\x1b[2K"
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        reply = await exchange(listener, json.dumps(envelope).encode() + b"\n")
        assert reply["status"] == "rejected"
    logged = [record.getMessage() for record in caplog.records]
    assert any("rejected connection payload" in message for message in logged), logged
    for message in logged:
        assert "\n" not in message and "\r" not in message and "\x1b" not in message, message


DEEP = 60_000  # far deeper than Python's recursion limit


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * DEEP,
        b'{"gp":2,"kernel_id":' + b"[" * DEEP + b',"nonce":"","ciphertext":""}',
        # an older launcher's frame (base64 of JSON with "version"), nested deep inside
        base64.b64encode(b'{"version":1,"key":' + b"[" * 40_000 + b"}"),
    ],
    ids=["bare", "in-a-field", "in-a-v1-frame"],
)
async def test_deeply_nested_payload_is_answered_malformed(
    broker: ConnectionBroker, caplog: pytest.LogCaptureFixture, payload: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    assert len(payload) < MAX_PAYLOAD_BYTES
    launch = expect(broker)
    async with ResponseListener(broker, HOST, 0, read_timeout=5) as listener:
        assert_rejected(await exchange(listener, payload + b"\n"), "malformed")
        await accept_now(broker, listener, launch)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], "a traceback was logged"


# A response listener in its own process, with few file descriptors: RLIMIT_NOFILE lowered before it starts.
LOW_FD_SERVER = r"""
import asyncio, logging, os, resource, sys
from gateway_provisioners.core.broker import ConnectionBroker
from gateway_provisioners.core.handshake import decode_token
from gateway_provisioners.listener import ResponseListener

resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[3]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
hogs = [open(os.devnull) for _ in range(int(sys.argv[4]))]  # descriptors the rest of a server would hold
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
logging.getLogger("gateway_provisioners.broker").setLevel(logging.ERROR)  # one line per rejected peer: too many

async def main():
    broker = ConnectionBroker()
    future = broker.expect(sys.argv[1], decode_token(sys.argv[2]))
    async with ResponseListener(broker, "127.0.0.1", 0, read_timeout=10) as listener:
        print("PORT", listener.port, flush=True)
        info = await future
        print("ACCEPTED", info["key"], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test closes stdin

asyncio.run(main())
"""


# The real agent's side, in a process of its own (like a real agent: it writes the moment it is connected), retrying
# "busy" and dropped connections until it is accepted or the deadline passes.
AGENT_ATTEMPTS = r"""
import json, socket, sys, time
port, line, deadline = int(sys.argv[1]), sys.argv[2].encode() + b"\n", time.monotonic() + float(sys.argv[3])
attempts = 0
while time.monotonic() < deadline:
    attempts += 1
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(line)
            reply = json.loads(sock.makefile("rb").readline())
    except (OSError, ValueError):
        time.sleep(0.05)
        continue
    if reply.get("status") == "accepted":
        print("ACCEPTED", attempts, flush=True)
        break
    time.sleep(0.05)
else:
    print("GAVE UP after", attempts, "attempts", flush=True)
"""


@pytest.mark.parametrize(
    "held_elsewhere",
    [0, 100],  # with 100 of 128 descriptors held by the rest of the process, accept() itself runs out
    ids=["listener-alone", "process-nearly-out"],
)
async def test_descriptor_exhaustion_is_bounded_and_a_real_agent_gets_through(
    tmp_path: Path, held_elsewhere: int
) -> None:
    fd_limit, peers, flood_seconds = 128, 400, 3.0
    launch = Launch(f"kernel-{uuid.uuid4()}", new_token(), asyncio.get_running_loop().create_future())
    script = tmp_path / "low_fd_server.py"
    script.write_text(LOW_FD_SERVER)
    stderr_path = tmp_path / "server.stderr"
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), launch.kernel_id, encode_token(launch.token),
            str(fd_limit), str(held_elsewhere),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    try:
        first = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert first.startswith(b"PORT "), (first, stderr_path.read_text())
        port = int(first.split()[1])
        stop = time.monotonic() + flood_seconds
        connections = 0

        async def peer() -> None:
            # Connect, send nothing, wait for the listener to answer or close; again until the flood ends.
            nonlocal connections
            while time.monotonic() < stop:
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 2)
                except (OSError, asyncio.TimeoutError):
                    await asyncio.sleep(0.01)
                    continue
                connections += 1
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    await asyncio.wait_for(reader.read(), max(0.01, stop - time.monotonic()))
                writer.close()

        flood = [asyncio.ensure_future(peer()) for _ in range(peers)]
        try:
            await asyncio.sleep(flood_seconds / 3)  # the flood is under way
            window = stop - time.monotonic()
            agent = await asyncio.create_subprocess_exec(
                sys.executable, "-c", AGENT_ATTEMPTS, str(port), launch.envelope(), str(window),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            agent_output, _ = await asyncio.wait_for(agent.communicate(), window + 10)
            assert agent_output.startswith(b"ACCEPTED"), f"the real agent did not get through: {agent_output!r}"
            done = await asyncio.wait_for(proc.stdout.readline(), 10)
            assert done == f"ACCEPTED {launch.info['key']}\n".encode()
            await asyncio.wait_for(asyncio.gather(*flood), flood_seconds + 10)
        finally:
            for task in flood:
                task.cancel()
        assert connections > peers  # the peers really reconnected against the listener
    finally:
        proc.stdin.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 10)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log_text = stderr_path.read_text()
    assert "Traceback" not in log_text, log_text[-3000:]
    # Running out is said once, not once per refused accept (the flood lasts less than the 10 s between warnings).
    assert log_text.count("Too many open files") <= (1 if held_elsewhere else 0), log_text[-3000:]
    assert proc.returncode == 0, log_text[-3000:]


async def test_agent_call_back_outlasts_a_listener_that_is_busy_for_a_while(
    broker: ConnectionBroker, agent_module: ModuleType
) -> None:
    # A stand-in listener answers "busy" for its first seconds (all slots held by someone), then serves normally.
    busy_for = 3.0
    launch = expect(broker)
    started = time.monotonic()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        code, detail = ("busy", "full") if time.monotonic() - started < busy_for else broker.accept(line.strip())
        writer.write(make_reply(code, detail))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, HOST, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        stand_in = SimpleNamespace(params={"response_address": f"{HOST}:{port}", "ready_timeout": 30})
        await asyncio.wait_for(agent_module.Agent.call_back(stand_in, agent_envelope(agent_module, launch)), 30)
        assert time.monotonic() - started >= busy_for
        assert await asyncio.wait_for(launch.future, WAIT) == launch.info
    finally:
        server.close()


async def test_agent_call_back_error_cannot_forge_log_lines(agent_module: ModuleType) -> None:
    # A rogue listener's reply goes into the agent's error message, which the agent logs: it must stay one line.
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        reply = {"gp": 2, "status": "rejected", "reason": "bad-seal\nFORGED", "detail": f"x\n{FORGED_LINE}"}
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, HOST, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        stand_in = SimpleNamespace(params={"response_address": f"{HOST}:{port}", "ready_timeout": 30})
        with pytest.raises(RuntimeError, match="rejected the connection info") as raised:
            await asyncio.wait_for(agent_module.Agent.call_back(stand_in, "{}"), WAIT)
        assert "\n" not in str(raised.value) and "\r" not in str(raised.value)
    finally:
        server.close()
