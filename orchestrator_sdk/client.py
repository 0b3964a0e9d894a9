"""``AsyncClient`` and ``Client``: every operation of the API on one workspace.

Both take their operations from the same classes (``orchestrator_sdk.operations``); each only
sends what an operation prepared, the async one with ``httpx.AsyncClient``, the sync one with
``httpx.Client``. What to retry and how long to wait is decided once, in ``_Base``.
"""

import random
import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self, TypeVar

import anyio
import httpx

from orchestrator_sdk.errors import Unreachable
from orchestrator_sdk.executor import ExecutorOperations
from orchestrator_sdk.operations import AsyncTransport, Call, Route, SyncTransport
from orchestrator_sdk.phases import PhaseOperations
from orchestrator_sdk.streams import AsyncEventStream, EventStream, StreamCall, StreamOptions
from orchestrator_sdk.todo import TodoOperations
from orchestrator_sdk.vault import VaultOperations
from orchestrator_sdk.workspace import WorkspaceOperations

T = TypeVar("T")
Item = TypeVar("Item")

DEFAULT_URL: Final = "http://127.0.0.1:8000"
USER_AGENT: Final = "orchestrator-sdk/0.1"
RETRY_STATUSES: Final = frozenset({502, 503, 504})
# Errors after which a request surely never reached the service.
NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class Retries:
    """How a call is retried: after a connection error or a 502/503/504, up to ``attempts``
    more times, waiting ``backoff_s`` doubling each time (and at least a ``Retry-After``).

    A write is retried with the ``Idempotency-Key`` of its first try, so the service applies
    it once. A write without a key (``idempotency_keys=False``) is retried only when it
    surely was not sent.
    """

    attempts: int = 3
    backoff_s: float = 0.25
    max_backoff_s: float = 5.0

    def wait(self, attempt: int, request: httpx.Request, outcome: object) -> float | None:
        """Seconds to wait before trying ``request`` again, or None not to."""
        if attempt >= self.attempts:
            return None
        keyed = request.method == "GET" or "idempotency-key" in request.headers
        backoff = min(self.backoff_s * 2.0**attempt, self.max_backoff_s)
        backoff *= 1 + random.random() / 4  # spread out clients that failed together
        if isinstance(outcome, httpx.Response):
            if outcome.status_code not in RETRY_STATUSES or not keyed:
                return None
            return max(backoff, _retry_after(outcome) or 0.0)
        if isinstance(outcome, httpx.UnsupportedProtocol):
            return None  # a bad URL: no retry will fix it
        return backoff if keyed or isinstance(outcome, NOT_SENT) else None


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return min(float(response.headers.get("retry-after", "")), 30.0)
    except ValueError:
        return None


class Operations(
    WorkspaceOperations, TodoOperations, ExecutorOperations, PhaseOperations, VaultOperations
):
    """Every operation of the API (see ``api/contract.py`` for the routes they call)."""


class _Base:
    def __init__(
        self,
        base_url: str,
        workspace: str,
        token: str | None,
        retries: Retries,
        idempotency_keys: bool,
        stream_idle_timeout: float,
        stream_max_retries: int | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.workspace = workspace
        self.retries = retries
        self.idempotency_keys = idempotency_keys
        self._stream_options = StreamOptions(stream_idle_timeout, stream_max_retries)
        self._headers = {"User-Agent": USER_AGENT}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r}, {self.workspace!r})"

    def _prepare(
        self, http: httpx.Client | httpx.AsyncClient, route: Route, call: Call[T]
    ) -> httpx.Request:
        return call.request(http, route, self.workspace, self._new_key)

    def _new_key(self) -> str | None:
        return f"sdk-{uuid.uuid4().hex}" if self.idempotency_keys else None

    def _url(self, route: Route) -> str:
        return route.url(self.workspace, {})


def _unreachable(request: httpx.Request, exc: Exception) -> Unreachable:
    return Unreachable(f"{request.method} {request.url}: {str(exc) or type(exc).__name__}")


class AsyncClient(_Base, AsyncTransport, Operations):
    """The async client: ``await client.get_todo()``, ``async for e in client.stream_events()``.

    Use it as an async context manager (or ``await client.aclose()``). ``timeout`` bounds
    each request; streams instead reconnect after ``stream_idle_timeout`` without a byte
    (the service sends a heartbeat every 15 s) and give up after ``stream_max_retries``
    failed connections in a row (None: never).
    """

    def __init__(
        self,
        base_url: str,
        workspace: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: Retries = Retries(),
        idempotency_keys: bool = True,
        stream_idle_timeout: float = 60.0,
        stream_max_retries: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            workspace,
            token,
            retries,
            idempotency_keys,
            stream_idle_timeout,
            stream_max_retries,
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, route: Route, call: Call[T]) -> T:
        request = self._prepare(self._http, route, call)
        attempt = 0
        while True:
            try:
                response = await self._http.send(request)
            except httpx.TransportError as exc:
                if (wait := self.retries.wait(attempt, request, exc)) is None:
                    raise _unreachable(request, exc) from exc
            else:
                if (
                    response.status_code in call.also
                    or (wait := self.retries.wait(attempt, request, response)) is None
                ):
                    return call.answer(response)
            await anyio.sleep(wait)
            attempt += 1

    def _stream(self, route: Route, call: StreamCall[Item]) -> AsyncEventStream[Item]:
        return AsyncEventStream(self._http, self._url(route), call, self._stream_options)


class Client(_Base, SyncTransport, Operations):
    """The sync client: the same operations as ``AsyncClient``, returning their results, and
    streams as plain iterators. Use it as a context manager (or ``client.close()``)."""

    def __init__(
        self,
        base_url: str,
        workspace: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: Retries = Retries(),
        idempotency_keys: bool = True,
        stream_idle_timeout: float = 60.0,
        stream_max_retries: int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            workspace,
            token,
            retries,
            idempotency_keys,
            stream_idle_timeout,
            stream_max_retries,
        )
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, route: Route, call: Call[T]) -> T:
        request = self._prepare(self._http, route, call)
        attempt = 0
        while True:
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:
                if (wait := self.retries.wait(attempt, request, exc)) is None:
                    raise _unreachable(request, exc) from exc
            else:
                if (
                    response.status_code in call.also
                    or (wait := self.retries.wait(attempt, request, response)) is None
                ):
                    return call.answer(response)
            time.sleep(wait)
            attempt += 1

    def _stream(self, route: Route, call: StreamCall[Item]) -> EventStream[Item]:
        return EventStream(self._http, self._url(route), call, self._stream_options)
