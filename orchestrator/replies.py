"""Typed views of Redis replies.

redis-py types replies loosely (``bytes | str | ...``); our clients never decode responses,
so every reply is bytes. These narrow a reply once, where it is read.
"""

from collections.abc import Iterable, Mapping
from typing import Any

Entry = tuple[bytes, Mapping[bytes, bytes]]


def as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"expected a bulk string reply, got {type(value).__name__}")


def as_str(value: Any) -> str:
    return as_bytes(value).decode()


def as_int(value: Any, default: int = 0) -> int:
    return default if value is None else int(value)


def stream_entries(reply: Any) -> Iterable[Entry]:
    """The entries of an XRANGE reply, or of one stream of an XREAD reply."""
    return reply or ()
