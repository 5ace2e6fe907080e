"""A small, deterministic mutator for fuzzing the protocol parsers with bytes a hostile peer could send.

Each mutation starts from a valid message and breaks it a little: flipped bits, cut or repeated slices, inserted
junk, or a JSON value swapped for one of the wrong type, a huge number, a deep nesting, a newline. A fixed seed makes
every run the same, so a failure can be replayed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

DEEP = b"[" * 5000
NASTY_BYTES = [
    DEEP,
    b"{" * 5000,
    b'"\\n"',
    b"null",
    b"123",
    b"-1e999",
    b"NaN",
    b'"\\ud800"',
    b"\xff\xfe",
    b"9" * 5000,
    b"[]",
    b"{}",
    b"true",
    b"\x00",
    b"\n",
]
NASTY_VALUES: list[Any] = [
    None,
    123,
    -1,
    2.0,
    True,
    [],
    {},
    "",
    "\n",
    "x" * 70_000,
    [[[["deep"]]]],
    {"nonce": 1},
    "AAAA",
    "====",
    "AAAAAAAAAAAAAAAAAAAAAA==",
]


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    kind = rng.randrange(6)
    position = rng.randrange(len(data) + 1)
    if kind == 0 and data:  # flip one bit
        index = rng.randrange(len(data))
        data[index] ^= 1 << rng.randrange(8)
    elif kind == 1:  # cut
        del data[position : position + rng.randrange(1, 64)]
    elif kind == 2:  # insert junk
        data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    elif kind == 3:  # repeat a slice
        data[position:position] = data[position : position + rng.randrange(1, 64)] * rng.randrange(2, 5)
    else:  # splice in something nasty
        data[position:position] = rng.choice(NASTY_BYTES)
    return bytes(data)


def _mutate_json(rng: random.Random, data: bytes) -> bytes:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):  # an earlier mutation broke it, or nested it deep
        return _mutate_bytes(rng, data)
    if not isinstance(obj, dict) or not obj:
        return _mutate_bytes(rng, data)
    key = rng.choice(sorted(obj))
    if rng.random() < 0.2:
        del obj[key]
        return json.dumps(obj).encode()
    obj[key] = "@@HOLE@@"
    text = json.dumps(obj).encode()
    if rng.random() < 0.3:  # a raw fragment that is not valid JSON on its own
        return text.replace(b'"@@HOLE@@"', rng.choice(NASTY_BYTES))
    return text.replace(b'"@@HOLE@@"', json.dumps(rng.choice(NASTY_VALUES)).encode())


def mutations(valid: list[bytes], count: int, seed: int = 11) -> Iterator[bytes]:
    """``count`` mutated messages, each from one of ``valid``, some mutated twice."""
    rng = random.Random(seed)
    for _ in range(count):
        data = rng.choice(valid)
        for _ in range(rng.choice((1, 1, 2))):
            data = _mutate_json(rng, data) if rng.random() < 0.5 else _mutate_bytes(rng, data)
        yield data
