"""The SSE streams as iterators: ``AsyncEventStream`` (async for) and ``EventStream`` (for).

Both drive the same ``Resumption`` (``orchestrator_sdk.sse``): connect with ``Last-Event-ID``,
feed it the bytes, yield what it makes, and on any end of a connection wait what it says and
connect again. Only the I/O differs. Close a stream (``aclose()``/``close()``, or use it as a
context manager) to end it; otherwise it runs for as long as it is iterated.
"""

import time
from collections import deque
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import anyio
import httpx

from orchestrator_sdk.errors import ApiError, Unreachable, api_error
from orchestrator_sdk.sse import LIVE, Ready, Reset, Resumption, StreamKind

Item = TypeVar("Item")


@dataclass(frozen=True)
class StreamCall(Generic[Item]):
    kind: StreamKind[Item]
    since_seq: int | None = None


@dataclass(frozen=True)
class StreamOptions:
    idle_timeout: float  # no byte for this long (heartbeats come every 15 s): reconnect
    max_retries: int | None  # failed connections in a row before raising; None: never


class _Connection:
    """What the drivers share besides ``Resumption``: the open request's outcome."""

    def __init__(self, url: str, options: StreamOptions) -> None:
        self.url = url
        self.options = options
        self.timeout = httpx.Timeout(10.0, read=options.idle_timeout)
        self.last_error: Exception | None = None

    def check(self, response: httpx.Response, body: bytes) -> bool:
        """True to read the stream; False to retry (5xx); raises on a 4xx."""
        if response.status_code == 200:
            return True
        error = api_error(response.status_code, body, response.headers.get("retry-after"))
        if response.status_code < 500:
            raise error
        self.last_error = error
        return False

    def wait(self, state: Resumption[Any]) -> float:
        """Seconds to wait before connecting again; raises once the retries are spent."""
        delay = state.delay()
        limit = self.options.max_retries
        if limit is not None and state.failures > limit:
            if isinstance(self.last_error, ApiError):
                raise self.last_error
            raise Unreachable(f"GET {self.url}: {self.last_error or 'the stream ended'}")
        state.reconnects += 1
        return delay


class AsyncEventStream(Generic[Item]):
    """``async for item in stream``: items, and ``Reset`` when the log was cut.

    It connects on first use. ``async with`` (or ``await stream.connect()``) connects at once
    and returns once subscribed: what is appended from then on is delivered, even to a
    stream that starts live.
    """

    def __init__(
        self, http: httpx.AsyncClient, url: str, call: StreamCall[Item], options: StreamOptions
    ) -> None:
        self._http = http
        self._connection = _Connection(url, options)
        self.state: Resumption[Item] = Resumption(call.kind, call.since_seq)
        self._items = self._run()
        self._early: deque[Item | Reset] = deque()  # items that came while connecting

    @property
    def last_seq(self) -> int | None:
        """The last seq seen (what a reconnect resumes after); None before it is known."""
        return _seq(self.state)

    @property
    def reconnects(self) -> int:
        return self.state.reconnects

    async def connect(self) -> Self:
        while not self.state.ready:
            item = await self._items.__anext__()
            if not isinstance(item, Ready):
                self._early.append(item)
        return self

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Item | Reset:
        if self._early:
            return self._early.popleft()
        while isinstance(item := await self._items.__anext__(), Ready):
            pass
        return item

    async def aclose(self) -> None:
        await self._items.aclose()

    async def __aenter__(self) -> Self:
        try:
            return await self.connect()
        except BaseException:
            await self.aclose()
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self) -> AsyncGenerator[Item | Reset | Ready]:
        state, connection = self.state, self._connection
        while True:
            try:
                request = self._http.build_request(
                    "GET", connection.url, headers=state.headers(), timeout=connection.timeout
                )
                response = await self._http.send(request, stream=True)
                try:
                    if connection.check(response, await _head(response)):
                        for ready in state.opened():
                            yield ready
                        async for chunk in response.aiter_bytes():
                            for item in state.feed(chunk):
                                yield item
                            if state.reconnect_now:
                                break
                finally:
                    await response.aclose()
            except (httpx.TransportError, httpx.StreamError) as exc:
                connection.last_error = exc
            await anyio.sleep(connection.wait(state))


class EventStream(Generic[Item]):
    """``for item in stream``: the sync twin of ``AsyncEventStream``."""

    def __init__(
        self, http: httpx.Client, url: str, call: StreamCall[Item], options: StreamOptions
    ) -> None:
        self._http = http
        self._connection = _Connection(url, options)
        self.state: Resumption[Item] = Resumption(call.kind, call.since_seq)
        self._items = self._run()
        self._early: deque[Item | Reset] = deque()

    @property
    def last_seq(self) -> int | None:
        return _seq(self.state)

    @property
    def reconnects(self) -> int:
        return self.state.reconnects

    def connect(self) -> Self:
        while not self.state.ready:
            item = next(self._items)
            if not isinstance(item, Ready):
                self._early.append(item)
        return self

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Item | Reset:
        if self._early:
            return self._early.popleft()
        while isinstance(item := next(self._items), Ready):
            pass
        return item

    def close(self) -> None:
        self._items.close()

    def __enter__(self) -> Self:
        try:
            return self.connect()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self) -> Generator[Item | Reset | Ready]:
        state, connection = self.state, self._connection
        while True:
            try:
                request = self._http.build_request(
                    "GET", connection.url, headers=state.headers(), timeout=connection.timeout
                )
                response = self._http.send(request, stream=True)
                try:
                    if connection.check(response, _head_sync(response)):
                        yield from state.opened()
                        for chunk in response.iter_bytes():
                            yield from state.feed(chunk)
                            if state.reconnect_now:
                                break
                finally:
                    response.close()
            except (httpx.TransportError, httpx.StreamError) as exc:
                connection.last_error = exc
            time.sleep(connection.wait(state))


async def _head(response: httpx.Response) -> bytes:
    """The body of an error answer (an SSE answer's body is the stream: not read here)."""
    return b"" if response.status_code == 200 else await response.aread()


def _head_sync(response: httpx.Response) -> bytes:
    return b"" if response.status_code == 200 else response.read()


def _seq(state: Resumption[Any]) -> int | None:
    return None if state.position == LIVE else state.position
