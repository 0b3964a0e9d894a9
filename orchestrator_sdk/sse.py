"""Server-Sent Events without I/O: frames from bytes, items from frames, and where to resume.

``Resumption`` is the whole of a stream's logic, shared by the async and the sync stream: it
turns the frames of one connection after another into items, remembers the last seq seen,
and says what the next connection asks for (``Last-Event-ID``) and how long to wait first.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

import msgspec

from orchestrator.events import PAYLOAD_TYPES, Payload, ToolCall
from orchestrator_sdk.errors import UnexpectedResponse

Item = TypeVar("Item")

# A stream that starts live asks for everything after this seq: no log reaches it, so the
# server answers a reset (reason "ahead") whose id is its last seq, then goes live. That
# reset is the SDK's own doing and is not surfaced; it tells the stream where it stands, so
# a reconnect even before the first event resumes from there rather than live again (which
# would skip what was appended while it was away).
LIVE: Final = 2**63 - 1
DEFAULT_RETRY_MS: Final = 2000
MAX_DELAY_S: Final = 30.0


class Event(msgspec.Struct, frozen=True):
    """One event of ``/events``: its seq, type and payload (JSON object)."""

    seq: int
    type: str
    payload: dict[str, Any]

    def decode(self) -> Payload | None:
        """The payload as its ``orchestrator.events`` type; None for a type this version of
        the SDK does not know."""
        cls = PAYLOAD_TYPES.get(self.type)
        return None if cls is None else msgspec.convert(self.payload, cls)


class LoggedCall(msgspec.Struct, frozen=True):
    """One tool call of ``/log/stream``, with the seq of its ``tool.call`` event."""

    seq: int
    call: ToolCall


class Reset(msgspec.Struct, frozen=True):
    """The stream could not continue right after ``since_seq``: the events after it were
    trimmed or purged (``reason`` "trimmed"), or ``since_seq`` is beyond the last seq
    ("ahead"). State built from earlier events is stale: drop it and rebuild from the items
    that follow, which continue after ``seq``."""

    seq: int
    since_seq: int
    first_seq: int
    last_seq: int
    reason: str


class Ready(msgspec.Struct, frozen=True):
    """Internal: the stream is subscribed and knows its position (never yielded to callers)."""


READY: Final = Ready()


class _ResetPayload(msgspec.Struct):
    since_seq: int
    first_seq: int
    last_seq: int
    reason: str


class _Enveloped(msgspec.Struct):
    payload: msgspec.Raw


@dataclass(frozen=True)
class StreamKind(Generic[Item]):
    """How one SSE route's frames read: its event items, and whether control frames (reset,
    reconnect) carry their payload in the ``{"seq","type","payload"}`` envelope."""

    item: Callable[[int, str, bytes], Item | None]
    enveloped: bool

    def reset(self, seq: int, data: bytes) -> Reset:
        if self.enveloped:
            data = _ENVELOPE.decode(data).payload
        given = _RESET.decode(data)
        return Reset(seq, given.since_seq, given.first_seq, given.last_seq, given.reason)


_ENVELOPE: Final = msgspec.json.Decoder(_Enveloped)
_RESET: Final = msgspec.json.Decoder(_ResetPayload)
_EVENT: Final = msgspec.json.Decoder(Event)
_TOOL_CALL: Final = msgspec.json.Decoder(ToolCall)


def _event(seq: int, name: str, data: bytes) -> Event:
    return _EVENT.decode(data)


def _logged_call(seq: int, name: str, data: bytes) -> LoggedCall | None:
    return LoggedCall(seq, _TOOL_CALL.decode(data)) if name == "tool.call" else None


EVENTS: Final[StreamKind[Event]] = StreamKind(_event, enveloped=True)
TOOL_CALLS: Final[StreamKind[LoggedCall]] = StreamKind(_logged_call, enveloped=False)


@dataclass
class Frame:
    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)
    retry: int | None = None
    seen: bool = False


class Parser:
    """Incremental SSE parser: bytes in, complete frames out (comments dropped)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._frame = Frame()

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        frames = []
        for raw in lines:
            line = raw.removesuffix(b"\r").decode()
            if not line:
                if self._frame.seen:
                    frames.append(self._frame)
                self._frame = Frame()
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            frame = self._frame
            if name == "id":
                frame.id, frame.seen = value, True
            elif name == "event":
                frame.event, frame.seen = value, True
            elif name == "data":
                frame.data.append(value)
                frame.seen = True
            elif name == "retry" and value.isdigit():
                frame.retry, frame.seen = int(value), True
        return frames


class Resumption(Generic[Item]):
    """One logical stream over any number of connections.

    Every item is yielded once and in order: an event at or below the last seq seen is a
    duplicate and dropped; ``reset`` frames are items (``Reset``) and move the position to
    their id; a ``reconnect`` frame (the server is shutting down, or this client fell too
    far behind) ends the connection and the next one starts at once from the last seq. Any
    other end of a connection waits the server's ``retry:`` first, doubling on each failure
    in a row (up to 8 times it, and at most 30 s unless the server asks for more).
    """

    def __init__(self, kind: StreamKind[Item], since_seq: int | None) -> None:
        self.kind = kind
        self.position = LIVE if since_seq is None else since_seq
        self.retry_ms = DEFAULT_RETRY_MS
        self.reconnects = 0  # connections after the first
        self.failures = 0  # connections in a row that failed before any frame
        self.reconnect_now = False
        self.ready = False  # subscribed, with a known position, at least once
        self._parser = Parser()

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": str(self.position), "Accept": "text/event-stream"}

    def opened(self) -> list[Ready]:
        """A connection was answered 200: READY if that makes the stream ready (a stream
        from a given seq is subscribed now; a live one once it knows where the log ends)."""
        self._parser = Parser()  # a cut-off frame of the last connection is dropped
        self.reconnect_now = False
        return self._ready() if self.position != LIVE else []

    def _ready(self) -> list[Ready]:
        first, self.ready = not self.ready, True
        return [READY] if first else []

    def feed(self, chunk: bytes) -> list[Item | Reset | Ready]:
        items: list[Item | Reset | Ready] = []
        for frame in self._parser.feed(chunk):
            self.failures = 0
            if frame.retry is not None:
                self.retry_ms = frame.retry
            if frame.event is None and not frame.data:
                continue
            if frame.event == "reset" and self.position == LIVE:
                items.extend(self._ready())
            item = self._item(frame)
            if item is not None:
                items.append(item)
        return items

    def _item(self, frame: Frame) -> Item | Reset | None:
        if frame.id is None or not frame.id.isdigit():
            raise UnexpectedResponse(f"SSE frame without a seq id: {frame}")
        seq, name, data = int(frame.id), frame.event or "message", "\n".join(frame.data)
        try:
            if name == "reconnect":
                self.position = max(self.position, seq) if self.position != LIVE else seq
                self.reconnect_now = True
                return None
            if name == "reset":
                reset = self.kind.reset(seq, data.encode())
                self.position = seq
                return None if reset.since_seq == LIVE else reset
            if self.position != LIVE and seq <= self.position:
                return None  # seen already (a replay overlapping what was delivered)
            item = self.kind.item(seq, name, data.encode())
        except msgspec.DecodeError as exc:
            raise UnexpectedResponse(f"SSE frame {name} {seq}: {exc}") from exc
        self.position = seq
        return item

    def delay(self) -> float:
        """Seconds to wait before the next connection, counting this failure."""
        if self.reconnect_now:
            self.reconnect_now = False
            return 0.0
        self.failures += 1
        base = self.retry_ms / 1000
        return min(base * 2.0 ** min(self.failures - 1, 3), max(base, MAX_DELAY_S))
