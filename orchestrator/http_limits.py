"""What uvicorn does not bound by itself: how long a client may take to send a request, how
large a request head may grow, and how many connections one replica holds.

uvicorn (0.55) arms no timer on a connection until it has answered a first request, so a
client that sends half a request head, or nothing at all, holds its connection (and a file
descriptor) for ever; with httptools a head may also grow without limit. Its
``limit_concurrency`` bounds neither: it answers 503 only once a whole head has arrived, and
it counts the long-lived SSE streams too. The protocols here are uvicorn's two HTTP/1.1
implementations with the missing bounds added:

- a request head must be complete ``header_timeout_s`` after it began (or after the
  connection opened): a fixed deadline, so trickling a byte at a time does not extend it;
- a request body may go silent for at most ``body_timeout_s`` (time spent waiting for the
  app to take what was read does not count);
- a head over ``max_head_bytes`` is answered 400 (with h11 this is h11's own bound, which
  holds only while the head is incomplete: one read, 64 KiB or so, may bring a larger one;
  with httptools both the parsed head and what is read while it is incomplete are bounded);
- beyond ``max_connections`` open connections a new one is answered 503 and closed.

A late connection is closed without an answer, as nginx does. The proxy in front should
bound the same things (deploy/README.md): these are the replica's own last line.
"""

import asyncio
import resource
from dataclasses import dataclass
from typing import ClassVar, Final

import h11
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from orchestrator.settings import Settings

IDLE, HEAD, BODY = 0, 1, 2  # what a connection is reading
FULL: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\n"
    b"connection: close\r\n\r\n"
)
RESERVED_FDS = 0.1  # of the open-file limit, kept for Redis, imports and logs by default


@dataclass(frozen=True, slots=True)
class ReadLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_head_bytes: int
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> "ReadLimits":
        return cls(
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_head_bytes=settings.max_head_bytes,
            max_connections=settings.max_connections or default_max_connections(),
        )


def default_max_connections() -> int:
    """The open-file limit less a tenth: past it, accept() itself would start failing and
    every client, /healthz included, would go unanswered."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(1, int(soft * (1 - RESERVED_FDS)))


class ReadClock:
    """When the request a connection is reading is late, and closing it then. One timer per
    connection, re-armed only when it fires while a request is still being read, so a busy
    keep-alive connection costs a clock read per request rather than a timer."""

    __slots__ = ("began", "flow", "last_read", "limits", "loop", "phase", "timer", "transport")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limits: ReadLimits,
        transport: asyncio.Transport,
        flow: FlowControl,
    ) -> None:
        self.loop, self.limits, self.transport, self.flow = loop, limits, transport, flow
        self.phase = IDLE
        self.began = self.last_read = loop.time()
        self.timer: asyncio.TimerHandle | None = None

    def head(self) -> None:
        """A request began (or the connection opened): its head is due."""
        if self.phase != HEAD:
            self.phase, self.began = HEAD, self.loop.time()
            self._arm()

    def body(self) -> None:
        self.phase, self.last_read = BODY, self.loop.time()
        self._arm()

    def read(self) -> None:
        self.last_read = self.loop.time()

    def idle(self) -> None:
        """The request is read (the app has it): nothing is due."""
        self.phase = IDLE

    def stop(self) -> None:
        self.phase = IDLE
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _due(self) -> float:
        if self.phase == HEAD:
            return self.began + self.limits.header_timeout_s
        return self.last_read + self.limits.body_timeout_s

    def _arm(self) -> None:
        due = self._due()
        if self.timer is not None and self.timer.when() <= due:
            return  # fires first, and re-arms for what is left
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(due, self._check)

    def _check(self) -> None:
        self.timer = None
        if self.phase == IDLE or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.phase == BODY and self.flow.read_paused:
            self.last_read = now  # the app has not taken what was read: not the client's delay
        due = self._due()
        if now >= due:
            self.phase = IDLE
            self.transport.close()
            return
        self.timer = self.loop.call_at(due, self._check)


class ConnectionLimits(asyncio.Protocol):
    """What both protocols below do as a connection opens and closes: refuse it past the
    cap, else start its clock. Listed before uvicorn's protocol, whose methods it extends."""

    limits: ClassVar[ReadLimits]
    clock: ReadClock | None = None
    loop: asyncio.AbstractEventLoop
    flow: FlowControl
    server_state: ServerState

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.server_state.connections) >= self.limits.max_connections:
            transport.write(FULL)
            transport.close()
            return
        super().connection_made(transport)
        self.clock = ReadClock(self.loop, self.limits, transport, self.flow)
        self.clock.head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.clock is None:
            return  # refused: uvicorn never saw it
        self.clock.stop()
        super().connection_lost(exc)


class HttpToolsWithLimits(ConnectionLimits, HttpToolsProtocol):
    head_bytes = 0  # of the request line and the headers llhttp has reported
    head_read = 0  # bytes read while a head was incomplete, since the last head ended

    def data_received(self, data: bytes) -> None:
        clock = self.clock
        assert clock is not None
        clock.read()
        if clock.phase == IDLE and (self.cycle is None or self.cycle.response_complete):
            # Bytes between requests stop uvicorn's keep-alive timer, yet llhttp reports no
            # request begun for a line break, or until a method is complete: the head is due
            # from now, else one CRLF would hold the connection for ever.
            clock.head()
        if clock.phase == HEAD:
            self.head_read += len(data)
        super().data_received(data)
        # httptools reports a header only once it ends, and gathers its value by copying,
        # so one that never ends escapes on_header and costs quadratic time: bound what is
        # read instead. Checked after parsing, as a read that completes a head may bring
        # a body too; so a head may outgrow the bound by one read before it is refused.
        if clock.phase == HEAD and self.head_read > self.limits.max_head_bytes:
            self._refuse_head()

    def _refuse_head(self) -> None:
        if self.transport.is_closing():
            return  # uvicorn refused this read already (it could not be parsed)
        if self.cycle is None or self.cycle.response_complete:
            # Between two parser calls: answered as uvicorn answers a head it cannot parse.
            message = "Request head too large."
            self.logger.warning(message)
            self.send_400_response(message)
        else:
            # The head is pipelined behind a response still being written: a 400 now
            # would land inside that response, so close without one.
            self.transport.close()

    def on_message_begin(self) -> None:
        assert self.clock is not None
        self.head_bytes = 0
        self.clock.head()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > self.limits.max_head_bytes:
            # Raised inside the parser's callback: uvicorn answers 400 and closes.
            raise ValueError("request head too large")

    def on_headers_complete(self) -> None:
        assert self.clock is not None
        self.head_read = 0
        self.clock.body()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        assert self.clock is not None
        self.clock.idle()
        super().on_message_complete()


class H11WithLimits(ConnectionLimits, H11Protocol):
    def data_received(self, data: bytes) -> None:
        assert self.clock is not None
        self.clock.read()
        if self.clock.phase == IDLE:
            self.clock.head()
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start reading a pipelined request
        self._follow()

    def _follow(self) -> None:
        """The phase from h11's state: it reports no events for a partial head."""
        assert self.clock is not None
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self.clock.phase != BODY:
                self.clock.body()
        elif state is h11.IDLE and self.conn.trailing_data[0]:
            self.clock.head()
        elif state is not h11.IDLE:
            self.clock.idle()


def http_protocol(name: str, limits: ReadLimits) -> type[asyncio.Protocol]:
    """The protocol class for ``--http`` (auto: httptools when installed, as uvicorn picks)."""
    if name == "auto":
        try:
            import httptools  # noqa: F401
        except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
            name = "h11"
        else:
            name = "httptools"
    base = HttpToolsWithLimits if name == "httptools" else H11WithLimits
    return type(base.__name__, (base,), {"limits": limits})
