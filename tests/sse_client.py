"""A small Server-Sent Events client for tests.

``Parser`` turns the bytes of an SSE body into ``Frame`` objects, one per block (the lines up to
a blank line), keeping what a browser would throw away: a block that holds only ``retry:`` or
only ``:`` comments is a frame too, so tests can assert the exact sequence a server wrote.

``EventStream`` reads an httpx streaming response frame by frame, and ``RawEventStream`` is a
bare socket with a small receive buffer, for tests that must not read until they choose to.
"""

import json
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

HEARTBEAT_COMMENT = "keep-alive"


class EndOfStream(AssertionError):
    """The server ended the response before the frame the test waited for."""


@dataclass(frozen=True)
class Frame:
    id: str | None = None
    event: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: tuple[str, ...] = ()

    @property
    def seq(self) -> int:
        if self.id is None:
            raise AssertionError(f"frame has no id: {self}")
        return int(self.id)

    @property
    def is_event(self) -> bool:
        return self.event is not None or self.data is not None

    @property
    def is_heartbeat(self) -> bool:
        return self == Frame(comments=(HEARTBEAT_COMMENT,))

    def json(self) -> Any:
        if self.data is None:
            raise AssertionError(f"frame has no data: {self}")
        return json.loads(self.data)


@dataclass
class _Block:
    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    seen: bool = False

    def frame(self) -> Frame:
        data = "\n".join(self.data) if self.data else None
        return Frame(self.id, self.event, data, self.retry, tuple(self.comments))


class Parser:
    """Incremental SSE parser (lines end with LF, or CRLF)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._block = _Block()

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        frames: list[Frame] = []
        for raw in lines:
            frame = self._line(raw.removesuffix(b"\r").decode())
            if frame is not None:
                frames.append(frame)
        return frames

    @property
    def idle(self) -> bool:
        """Nothing buffered: the bytes fed so far ended on a frame boundary."""
        return not self._buffer and not self._block.seen

    def _line(self, line: str) -> Frame | None:
        block = self._block
        if not line:
            if not block.seen:
                return None
            self._block = _Block()
            return block.frame()
        block.seen = True
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if not name:
            block.comments.append(value)
        elif name == "id":
            block.id = value
        elif name == "event":
            block.event = value
        elif name == "data":
            block.data.append(value)
        elif name == "retry":
            block.retry = int(value)
        else:
            raise AssertionError(f"unknown SSE field in line {line!r}")
        return None


def parse(body: bytes) -> list[Frame]:
    """Every frame of a complete SSE body (which must end on a frame boundary)."""
    parser = Parser()
    frames = parser.feed(body)
    assert parser.idle, f"SSE body ends inside a frame: {body[-200:]!r}"
    return frames


def events(frames: list[Frame]) -> list[Frame]:
    """Only the frames that carry an event (no retry-only or comment-only blocks)."""
    return [f for f in frames if f.is_event]


def seqs(frames: list[Frame]) -> list[int]:
    return [f.seq for f in events(frames)]


class EventStream:
    """An open SSE response, read frame by frame."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._chunks = response.iter_raw()
        self._parser = Parser()
        self._pending: deque[Frame] = deque()

    def next(self) -> Frame:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                raise EndOfStream("the server ended the stream")
            self._pending.extend(self._parser.feed(chunk))
        return self._pending.popleft()

    def until(self, stop: Callable[[Frame], bool], timeout: float = 5.0) -> list[Frame]:
        """Frames up to and including the first one ``stop`` accepts.

        Bounded in time: the servers under test send a heartbeat every second, so the
        deadline is checked at least that often (and a silent server hits the read timeout).
        """
        deadline = time.monotonic() + timeout
        frames: list[Frame] = []
        while True:
            try:
                frame = self.next()
            except EndOfStream as exc:
                raise EndOfStream(f"stream ended; received {_summary(frames)}") from exc
            frames.append(frame)
            if stop(frame):
                return frames
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching frame within {timeout} s: {_summary(frames)}")

    def until_seq(self, seq: int, timeout: float = 5.0) -> list[Frame]:
        """Frames up to the event with id ``seq`` (or a reconnect, which ends a stream)."""
        return self.until(
            lambda f: f.is_event and (f.event == "reconnect" or f.seq >= seq), timeout
        )

    def to_end(self, timeout: float = 5.0) -> list[Frame]:
        """Every frame until the server ends the response."""
        deadline = time.monotonic() + timeout
        frames: list[Frame] = []
        while True:
            try:
                frames.append(self.next())
            except EndOfStream:
                return frames
            if time.monotonic() > deadline:
                raise AssertionError(f"the stream did not end within {timeout} s")


def _summary(frames: list[Frame]) -> str:
    ids = [f.id for f in frames if f.is_event]
    kinds = sorted({f.event or "" for f in frames if f.is_event})
    return f"{len(frames)} frames, event ids {ids[:5]}...{ids[-5:]}, types {kinds}"


@contextmanager
def open_stream(
    client: httpx.Client,
    path: str,
    *,
    since_seq: int | None = None,
    last_event_id: str | None = None,
) -> Iterator[EventStream]:
    """GET an SSE endpoint; the response must be 200 and start with the ``retry:`` frame."""
    params = {} if since_seq is None else {"since_seq": str(since_seq)}
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    with client.stream("GET", path, params=params, headers=headers) as response:
        if response.status_code != 200:
            response.read()
            raise AssertionError(f"GET {path}: {response.status_code} {response.text}")
        stream = EventStream(response)
        assert stream.next() == Frame(retry=2000)
        yield stream


class RawEventStream:
    """An SSE request over a bare socket whose receive buffer is small: until the test reads,
    the server's writes back up into its own buffers (a slow consumer)."""

    def __init__(self, host: str, port: int, path: str, rcvbuf: int = 4096) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # Before connect, so that the advertised window is small from the handshake on.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(10)
            self.sock.connect((host, port))
            head = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            request = head + "Accept: text/event-stream\r\n\r\n"
            self.sock.sendall(request.encode())
        except BaseException:
            self.sock.close()
            raise
        self._file = self.sock.makefile("rb")
        self._chunks: Iterator[bytes] | None = None
        self._parser = Parser()

    def read_head(self) -> tuple[int, dict[str, str]]:
        """The status and headers (lower-case names) of the response."""
        status_line = self._file.readline()
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := self._file.readline().rstrip(b"\r\n")) != b"":
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        assert headers.get("transfer-encoding") == "chunked", headers
        return status, headers

    def chunks(self) -> Iterator[bytes]:
        """The chunks of the (chunked) body, up to its end."""
        while (size := int(self._file.readline().strip(), 16)) != 0:
            chunk = self._file.read(size)
            assert len(chunk) == size, "the server closed the connection mid-chunk"
            assert self._file.read(2) == b"\r\n"
            yield chunk
        assert self._file.readline() == b"\r\n"

    def until(self, stop: Callable[[Frame], bool], timeout: float = 10.0) -> list[Frame]:
        """After ``read_head``: frames up to the first one ``stop`` accepts, or every frame up
        to the end of the body if the server ends it first."""
        if self._chunks is None:
            self._chunks = self.chunks()
        deadline = time.monotonic() + timeout
        frames: list[Frame] = []
        for chunk in self._chunks:
            for frame in self._parser.feed(chunk):
                frames.append(frame)
                if stop(frame):
                    return frames
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching frame within {timeout} s: {_summary(frames)}")
        assert self._parser.idle, "the body ended inside a frame"
        return frames

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and the whole body: for a response that the server ends."""
        status, headers = self.read_head()
        return status, headers, b"".join(self.chunks())

    def close(self) -> None:
        self._file.close()
        self.sock.close()

    def __enter__(self) -> "RawEventStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
