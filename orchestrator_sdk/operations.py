"""Operations, once for both clients: what each sends and how its answer reads, without I/O.

An operation is written once, as a method that returns a ``Call`` (its path parameters, query,
body and the type its answer decodes into), decorated with its route. The decorator makes it a
descriptor: read from an ``AsyncTransport`` (``AsyncClient``) it is a coroutine function, read
from a ``SyncTransport`` (``Client``) a plain function, both typed with the method's own
parameters and answer. The transports only send a prepared request and read the answer back.
"""

import functools
import inspect
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, cast, overload
from urllib.parse import quote

import httpx
import msgspec

from orchestrator_sdk.errors import UnexpectedResponse, api_error
from orchestrator_sdk.streams import AsyncEventStream, EventStream, StreamCall

P = ParamSpec("P")
T = TypeVar("T")
Item = TypeVar("Item")

PREFIX = "/api/v1/workspaces/{workspaceID}/orchestration"


@dataclass(frozen=True)
class Route:
    id: str  # the method's name: the operation id, but for variants of one route
    method: str
    path: str  # under PREFIX when scoped, else from the root
    scoped: bool = True

    def url(self, workspace: str, params: Mapping[str, str]) -> str:
        path = self.path.format_map({k: quote(v, safe="") for k, v in params.items()})
        if not self.scoped:
            return path
        return PREFIX.format(workspaceID=quote(workspace, safe="")) + path


# Every route the SDK calls, by method name: tests check them against the server's contract
# (a name the contract does not have, such as ``export_todo_markdown``, must call one of its
# routes).
ROUTES: dict[str, Route] = {}

Reader = Callable[[httpx.Response], T]


@functools.cache
def _decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(type_)


def decoded(type_: type[T]) -> Reader[T]:
    """Read the answer as JSON of this type."""
    decoder: msgspec.json.Decoder[T] = _decoder(cast(Any, type_))

    def read(response: httpx.Response) -> T:
        try:
            return decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise UnexpectedResponse(
                f"{response.request.method} {response.request.url.path}: {exc}"
            ) from exc

    return read


def optional(type_: type[T]) -> Reader[T | None]:
    """As ``decoded``, or None for 204 No Content."""
    read = decoded(type_)
    return lambda response: None if response.status_code == 204 else read(response)


def text(response: httpx.Response) -> str:
    return response.text


@dataclass(frozen=True, kw_only=True)
class Call(Generic[T]):
    """One request of an operation: what goes in the route's path, query and body, and how
    its success answer reads. ``also`` lists error statuses that answer the success shape."""

    read: Reader[T]
    path: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, object] = field(default_factory=dict)
    body: object = None  # None: no body; else encoded as JSON
    idempotency_key: str | None = None
    also: tuple[int, ...] = ()

    def request(
        self,
        http: httpx.Client | httpx.AsyncClient,
        route: Route,
        workspace: str,
        new_key: Callable[[], str | None],
    ) -> httpx.Request:
        """The request to send, and to send again as is on a retry: a write carries an
        ``Idempotency-Key`` (``new_key()`` unless the caller gave one), so the service
        applies it once however many times it arrives."""
        headers = {}
        key = self.idempotency_key or (new_key() if route.method != "GET" else None)
        if key is not None:
            headers["Idempotency-Key"] = key
        content = None
        if self.body is not None:
            content = msgspec.json.encode(self.body)
            headers["Content-Type"] = "application/json"
        return http.build_request(
            route.method,
            route.url(workspace, self.path),
            params=query_params(self.query),
            headers=headers,
            content=content,
        )

    def answer(self, response: httpx.Response) -> T:
        if response.status_code >= 400 and response.status_code not in self.also:
            raise api_error(
                response.status_code, response.content, response.headers.get("retry-after")
            )
        return self.read(response)


def query_params(query: Mapping[str, object]) -> dict[str, str]:
    """Query parameters as sent: None is left out, booleans are ``true``/``false``."""
    params = {}
    for name, value in query.items():
        if value is None:
            continue
        params[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return params


def fields(**values: object) -> dict[str, object]:
    """A JSON body of the given fields, leaving out the ones that are None (not given)."""
    return {name: value for name, value in values.items() if value is not None}


class AsyncTransport:
    """What an operation needs of the async client: send one call, open one stream."""

    async def _send(self, route: Route, call: Call[T]) -> T:
        raise NotImplementedError

    def _stream(self, route: Route, call: StreamCall[Item]) -> AsyncEventStream[Item]:
        raise NotImplementedError


class SyncTransport:
    """What an operation needs of the sync client: send one call, open one stream."""

    def _send(self, route: Route, call: Call[T]) -> T:
        raise NotImplementedError

    def _stream(self, route: Route, call: StreamCall[Item]) -> EventStream[Item]:
        raise NotImplementedError


class Operation(Generic[P, T]):
    def __init__(self, route: Route, build: Callable[Concatenate[Any, P], Call[T]]) -> None:
        self.route = route
        self.build = build

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(
        self, obj: AsyncTransport, owner: type[Any]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    @overload
    def __get__(self, obj: SyncTransport, owner: type[Any]) -> Callable[P, T]: ...
    def __get__(self, obj: object, owner: type[Any]) -> object:
        if obj is None:
            return self
        route, build = self.route, self.build
        if isinstance(obj, AsyncTransport):

            async def call_async(*args: P.args, **kwargs: P.kwargs) -> T:
                return await obj._send(route, build(obj, *args, **kwargs))

            return _named(call_async, build)
        assert isinstance(obj, SyncTransport), f"{type(obj).__name__} is not a client"

        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            return obj._send(route, build(obj, *args, **kwargs))

        return _named(call, build)


def _named(function: Callable[..., Any], build: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` as ``help()`` and editors show it: the builder's name, docstring and
    parameters (without ``self``)."""
    function.__name__ = function.__qualname__ = build.__name__
    function.__doc__ = build.__doc__
    signature = inspect.signature(build)
    function.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=list(signature.parameters.values())[1:],
        return_annotation=inspect.Signature.empty,
    )
    return function


class StreamOperation(Generic[P, Item]):
    """An SSE route: read from a client, a function that opens its stream."""

    def __init__(self, route: Route, build: Callable[Concatenate[Any, P], StreamCall[Item]]):
        self.route = route
        self.build = build

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(
        self, obj: AsyncTransport, owner: type[Any]
    ) -> Callable[P, AsyncEventStream[Item]]: ...
    @overload
    def __get__(self, obj: SyncTransport, owner: type[Any]) -> Callable[P, EventStream[Item]]: ...
    def __get__(self, obj: object, owner: type[Any]) -> object:
        if obj is None:
            return self
        assert isinstance(obj, AsyncTransport | SyncTransport), f"{obj!r} is not a client"
        route, build, transport = self.route, self.build, obj

        def open_stream(*args: P.args, **kwargs: P.kwargs) -> object:
            return transport._stream(route, build(transport, *args, **kwargs))

        return _named(open_stream, build)


def operation(
    method: str, path: str, *, scoped: bool = True
) -> Callable[[Callable[Concatenate[Any, P], Call[T]]], Operation[P, T]]:
    """Make a ``Call`` builder an operation of both clients, on this route."""

    def register(build: Callable[Concatenate[Any, P], Call[T]]) -> Operation[P, T]:
        return Operation(_route(build, method, path, scoped), build)

    return register


def stream(
    path: str,
) -> Callable[[Callable[Concatenate[Any, P], StreamCall[Item]]], StreamOperation[P, Item]]:
    """Make a ``StreamCall`` builder a stream of both clients, on this ``GET`` route."""

    def register(
        build: Callable[Concatenate[Any, P], StreamCall[Item]],
    ) -> StreamOperation[P, Item]:
        return StreamOperation(_route(build, "GET", path, True), build)

    return register


def _route(build: Callable[..., Any], method: str, path: str, scoped: bool) -> Route:
    route = Route(build.__name__, method, path, scoped)
    ROUTES[route.id] = route
    return route
