"""``core.logsafe``: network and client values are logged on one line, with control characters escaped."""

from __future__ import annotations

import logging

import pytest

from gateway_provisioners.core.logsafe import EscapingFilter, printable, safe_logger


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("kernel-1", "kernel-1"),
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("\x1b[2J", "\\x1b[2J"),
        ("tab\tstays", "tab\tstays"),
        ("line\u2028separator", "line\\u2028separator"),
        ("next\x85line", "next\\x85line"),
        (42, "42"),
    ],
)
def test_printable_escapes_what_could_start_a_line(value: object, expected: str) -> None:
    assert printable(value) == expected


def test_printable_bounds_the_length() -> None:
    text = printable("x" * 10_000, limit=100)
    assert text.startswith("x" * 100) and "9900 more" in text and len(text) < 130


def test_filter_escapes_arguments_and_keeps_numbers(caplog: pytest.LogCaptureFixture) -> None:
    log = safe_logger("gateway_provisioners.test_logsafe")
    assert sum(isinstance(f, EscapingFilter) for f in safe_logger(log.name).filters) == 1  # added once
    caplog.set_level(logging.INFO, logger=log.name)
    log.info("kernel %s took %.1f s (%d tries): %s", "k\nFORGED", 1.25, 3, ValueError("bad\rvalue"))
    (record,) = caplog.records
    assert record.getMessage() == "kernel k\\nFORGED took 1.2 s (3 tries): bad\\rvalue"
