"""The connection broker: which launches are waiting for a payload, and the single-use rule.

The response listener (callback mode) and adapters that read the agent's output (stdout mode) hand every payload they
receive to :meth:`ConnectionBroker.accept`. The broker finds the waiting launch by kernel id, opens the payload with
that launch's token and resolves the launch's future. A launch's token is forgotten as soon as its payload is
accepted or the launch ends, so a payload can be used once.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import OrderedDict
from typing import Any

from .handshake import EnvelopeError, Reply, open_payload, parse_envelope
from .logsafe import safe_logger

log = safe_logger("gateway_provisioners.broker")

REMEMBER_ACCEPTED = 4096  # how many accepted kernel ids are kept to answer replays with "replayed"


class ConnectionBroker:
    """Pending launches, keyed by kernel id."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[bytes, asyncio.Future[dict[str, Any]]]] = {}
        self._accepted: OrderedDict[str, None] = OrderedDict()
        #: The address each accepted callback came from, until the launch takes it (:meth:`take_peer`).
        self.peers: dict[str, str] = {}

    def take_peer(self, kernel_id: str) -> str | None:
        return self.peers.pop(kernel_id, None)

    def expect(self, kernel_id: str, token: bytes) -> asyncio.Future[dict[str, Any]]:
        """Register a launch; the returned future gets the opened payload."""
        self.forget(kernel_id)
        self._accepted.pop(kernel_id, None)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[kernel_id] = (token, future)
        return future

    def forget(self, kernel_id: str) -> None:
        """Drop a launch (it ended or timed out); later payloads for it are refused."""
        self.peers.pop(kernel_id, None)
        entry = self._pending.pop(kernel_id, None)
        if entry is not None and not entry[1].done():
            entry[1].cancel()

    def is_waiting(self, kernel_id: str) -> bool:
        return kernel_id in self._pending

    def accept(self, data: bytes | str, peer: str = "") -> tuple[str, str]:
        """Try one payload. Returns ``(reply_code, detail)``; never raises for bad input."""
        try:
            envelope = parse_envelope(data)
        except EnvelopeError as exc:
            return self.reject(exc.code, str(exc), peer)
        if envelope.kernel_id in self._accepted:
            return self.reject(Reply.REPLAYED, "payload already accepted", peer, envelope.kernel_id)
        entry = self._pending.get(envelope.kernel_id)
        if entry is None:
            return self.reject(Reply.UNKNOWN_KERNEL, "no launch is waiting for this kernel", peer, envelope.kernel_id)
        token, future = entry
        try:
            info = open_payload(token, envelope)
        except EnvelopeError as exc:
            # A forged payload does not cancel the launch it names: the real agent may still call.
            return self.reject(exc.code, str(exc), peer, envelope.kernel_id)
        del self._pending[envelope.kernel_id]
        self._accepted[envelope.kernel_id] = None
        while len(self._accepted) > REMEMBER_ACCEPTED:
            self._accepted.popitem(last=False)
        peer_ip = _ip_of(peer)
        if peer_ip:
            self.peers[envelope.kernel_id] = peer_ip  # where the agent called from (callback mode)
        if not future.done():
            future.set_result(info)
        return Reply.ACCEPTED, ""

    @staticmethod
    def reject(code: str, detail: str, peer: str, kernel_id: str = "") -> tuple[str, str]:
        # Log the reason and who sent it, never the payload: it may hold key material.
        log.warning(
            "rejected connection payload%s%s: %s (%s)",
            f" for kernel {kernel_id}" if kernel_id else "",
            f" from {peer}" if peer else "",
            code,
            detail,
        )
        return code, detail


def _ip_of(peer: str) -> str | None:
    """The address in ``"ip:port"`` (the listener's peer), or None for anything else ("local output")."""
    host = peer.rsplit(":", 1)[0].strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None
