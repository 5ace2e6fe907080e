"""Text from the network or a client, made safe to log: one line, no control characters, bounded length.

A kernel id, a peer's protocol version, a platform's event message or a kernel's log tail may hold a newline, a
carriage return or a terminal escape sequence. Logged as is, they would start a line of the attacker's choosing in
the server's log. :func:`printable` escapes them (``\\n`` becomes the two characters ``\\n``), and
:class:`EscapingFilter` applies it to every argument of a log record, so a module's logger is safe whatever its
call sites pass.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

MAX_LOGGED_CHARS = 300

# Control characters, line and paragraph separators; a tab cannot start a line and is kept.
_UNSAFE_CATEGORIES = ("Cc", "Zl", "Zp")


def _escape(char: str) -> str:
    if char == "\t" or unicodedata.category(char) not in _UNSAFE_CATEGORIES:
        return char
    code = ord(char)
    return {"\n": "\\n", "\r": "\\r"}.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(value: Any, limit: int = MAX_LOGGED_CHARS) -> str:
    """``str(value)`` on one line: control characters escaped, cut to ``limit`` characters with a marker."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = f"{text[:limit]}…({len(text) - limit} more)"
    if text.isprintable():  # the common case costs one scan
        return text
    return "".join(_escape(char) for char in text)


class EscapingFilter(logging.Filter):
    """Escape every argument of a record (not the format string, which is ours) before it is formatted.

    Numbers stay numbers, so ``%d`` and ``%.1f`` still work; anything else is replaced by its escaped text. The
    exception text of ``log.exception`` is left alone: a traceback spans lines by nature.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict):
            record.args = {key: _safe_arg(value) for key, value in record.args.items()}
        elif record.args:
            record.args = tuple(_safe_arg(arg) for arg in record.args)
        return True


def _safe_arg(arg: Any) -> Any:
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return arg
    if isinstance(arg, str):
        return printable(arg, limit=2000)
    text = str(arg)
    escaped = printable(text, limit=2000)
    return arg if escaped == text else escaped


def safe_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with an :class:`EscapingFilter` (added once)."""
    logger = logging.getLogger(name)
    if not any(isinstance(existing, EscapingFilter) for existing in logger.filters):
        logger.addFilter(EscapingFilter())
    return logger
