"""Unit tests of ``port_range``: parsing ``lower..upper`` and allocating ports by binding and holding them."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from types import ModuleType

import pytest

from gateway_provisioners.core import port_range as pr
from gateway_provisioners.core.errors import ConfigurationError, PortRangeError
from gateway_provisioners.core.port_range import PortRange, hold_ports

HOST = "127.0.0.1"
# Below Linux's ephemeral range (32768..60999 by default), so outgoing connections do not land in our windows.
SEARCH_FROM, SEARCH_TO = 21000, 32000


def can_bind(port: int, reuse: bool = False) -> bool:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def free_window(size: int, after: int = SEARCH_FROM) -> PortRange:
    """The first ``size`` consecutive ports (aligned to ``size``) that are all free right now."""
    start = after + (-after % size)
    while start + size <= SEARCH_TO:
        if all(can_bind(port) for port in range(start, start + size)):
            return PortRange(start, start + size - 1)
        start += size
    raise AssertionError(f"no {size} free consecutive ports on {HOST} in {SEARCH_FROM}..{SEARCH_TO}")


@pytest.fixture(autouse=True)
def seeded_random(monkeypatch: pytest.MonkeyPatch) -> None:
    """hold_ports picks ports at random: make the picks repeatable."""
    monkeypatch.setattr(pr, "random", random.Random(20240531))


@pytest.fixture
def bind_attempts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every port hold_ports tries to bind, in order."""
    attempts: list[int] = []
    real_bind = pr._bind

    def counting_bind(ip: str, port: int) -> socket.socket:
        attempts.append(port)
        return real_bind(ip, port)

    monkeypatch.setattr(pr, "_bind", counting_bind)
    return attempts


@pytest.fixture
def occupied() -> Iterator[list[socket.socket]]:
    """Sockets a test binds to play 'another process'; closed at the end."""
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def occupy(sockets: list[socket.socket], port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, port))
    sockets.append(sock)


# --- parsing --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("40000..40005", PortRange(40000, 40005)),
        ("  40000..40999\n", PortRange(40000, 40999)),
        ("1024..65535", PortRange(1024, 65535)),
        ("65530..65535", PortRange(65530, 65535)),
        ("0..0", PortRange()),
        ("", PortRange()),
        ("   ", PortRange()),
        (None, PortRange()),
    ],
)
def test_parse_valid(text: str | None, expected: PortRange) -> None:
    assert PortRange.parse(text) == expected


@pytest.mark.parametrize("text", ["0..0", "", None])
def test_parse_any(text: str | None) -> None:
    parsed = PortRange.parse(text)
    assert parsed.is_any
    assert 1 in parsed and 65535 in parsed
    assert str(parsed) == "0..0"


def test_parse_min_size() -> None:
    assert PortRange.parse("40000..40001", min_size=2) == PortRange(40000, 40001)
    with pytest.raises(PortRangeError, match="at least 3"):
        PortRange.parse("40000..40001", min_size=3)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("40000", "lower..upper"),
        ("40000-40010", "lower..upper"),
        ("40000..40005..40010", "lower..upper"),
        ("40000...40010", "whole numbers"),
        ("a..b", "whole numbers"),
        ("40000..", "whole numbers"),
        ("..40000", "whole numbers"),
        ("1.5..40000", "whole numbers"),
        ("0..40000", "1024..65535"),
        ("40000..0", "1024..65535"),
        ("1000..2000", "1024..65535"),
        ("60000..70000", "1024..65535"),
        ("-5..40000", "1024..65535"),
        ("40010..40000", "lower bound is above"),
        ("40000..40004", "holds 5 ports"),
        ("40000..40000", "holds 1 ports"),
    ],
)
def test_parse_invalid(text: str, words: str) -> None:
    with pytest.raises(PortRangeError, match=words) as caught:
        PortRange.parse(text)
    assert type(caught.value) is PortRangeError
    assert isinstance(caught.value, ConfigurationError) and isinstance(caught.value, ValueError)
    assert repr(text) in str(caught.value)


def test_range_membership_and_text() -> None:
    ports = PortRange(40000, 40005)
    assert not ports.is_any
    assert 40000 in ports and 40005 in ports
    assert 39999 not in ports and 40006 not in ports
    assert str(ports) == "40000..40005"
    assert PortRange.parse(str(ports)) == ports


@pytest.mark.parametrize(
    "text", ["0..0", "", "40000..40005", "40000..40004", "40010..40000", "1000..2000", "0..40000", "a..b", "40000"]
)
def test_agent_parses_port_ranges_like_the_core(agent: ModuleType, text: str) -> None:
    try:
        core = PortRange.parse(text)
    except PortRangeError:
        with pytest.raises(ValueError):
            agent.parse_port_range(text)
    else:
        assert agent.parse_port_range(text) == (core.lower, core.upper)


# --- holding ports --------------------------------------------------------------------------------------------------


def test_hold_any_ports() -> None:
    with hold_ports(6, PortRange()) as held:
        assert len(held.ports) == len(set(held.ports)) == 6
        assert all(port > 0 for port in held.ports)
        assert not any(can_bind(port) for port in held.ports)
    assert all(can_bind(port) for port in held.ports)


def test_hold_ports_inside_a_range() -> None:
    window = free_window(32)
    held = hold_ports(6, window, ip=HOST)
    try:
        assert len(set(held.ports)) == 6
        assert all(port in window for port in held.ports)
        for port in held.ports:
            assert not can_bind(port), f"port {port} is not held"
            assert not can_bind(port, reuse=True), f"port {port} can be shared with SO_REUSEADDR"
            with pytest.raises(OSError):
                pr._bind(HOST, port)
    finally:
        released = held.release()
    assert released == held.ports
    assert all(can_bind(port) for port in released)
    assert held.release() == released  # twice is harmless


def test_two_allocations_from_one_range_are_distinct() -> None:
    window = free_window(32)
    with hold_ports(6, window) as first, hold_ports(6, window) as second:
        assert not set(first.ports) & set(second.ports)
        assert all(port in window for port in first.ports + second.ports)


def test_a_held_single_port_range_cannot_be_held_twice(bind_attempts: list[int]) -> None:
    port = free_window(1).lower
    only = PortRange(port, port)
    with hold_ports(1, only) as held:
        assert held.ports == [port]
        bind_attempts.clear()
        with pytest.raises(PortRangeError, match=f"{port}..{port}: 1 needed, 0 found, 1 taken"):
            hold_ports(1, only, retries=3)
        assert bind_attempts == [port], "a port is never tried twice"
    with hold_ports(1, only) as again:
        assert again.ports == [port]


def test_exhausted_range_raises_after_bounded_retries(bind_attempts: list[int]) -> None:
    window = free_window(6)
    ports = list(range(window.lower, window.upper + 1))
    holds = [hold_ports(1, PortRange(port, port)) for port in ports]  # the whole range, held port by port
    try:
        assert sorted(p for h in holds for p in h.ports) == ports
        bind_attempts.clear()
        with pytest.raises(PortRangeError, match=f"no free port on {HOST} in {window}") as caught:
            hold_ports(1, window)
        assert type(caught.value) is PortRangeError
        assert len(bind_attempts) == pr.DEFAULT_RETRIES
        assert len(set(bind_attempts)) == len(bind_attempts), "a port is never tried twice"
        assert all(port in window for port in bind_attempts)
    finally:
        for held in holds:
            held.release()


def test_range_taken_by_another_process(occupied: list[socket.socket], bind_attempts: list[int]) -> None:
    window = free_window(6)
    for port in range(window.lower, window.upper + 1):
        occupy(occupied, port)
    with pytest.raises(PortRangeError):
        hold_ports(1, window, retries=4)
    assert len(bind_attempts) == 4


def test_failed_allocation_releases_what_it_held(occupied: list[socket.socket]) -> None:
    window = free_window(6)
    taken = [window.lower, window.lower + 2, window.lower + 4]
    for port in taken:
        occupy(occupied, port)
    with pytest.raises(PortRangeError):
        hold_ports(6, window)  # only three ports are free: cannot succeed
    free = [window.lower + 1, window.lower + 3, window.upper]
    assert all(can_bind(port) for port in free), "a failed allocation kept ports bound"
