"""The hot routes, served straight from ASGI ahead of the Starlette app: the two SSE
streams, and recording tool calls.

One process holds thousands of SSE connections for hours, and everything suspended under
each of them is memory held per client. Through Starlette a stream sits under the middleware,
routing, request_response and exception-wrapper coroutines, with a Request and its scope
additions (~7.5 KB a connection, bench/capacity.py); served here it sits under one frame.

Agent runtimes post a tool call per request, the service's most frequent write. Through
Starlette about half of such a request's time went to that machinery and to the send
wrappers of its middleware (py-spy, bench/append.py); served here it is read, handed to the
same ``record_calls`` the app's route uses, and answered with two ASGI messages, counted in
the same metrics.

Only an exact ``GET`` of ``/events`` or ``/log/stream``, or ``POST`` of ``/log``, is taken;
anything else (``HEAD``, a trailing slash, any other route) goes to the app, which keeps the
same routes and serves them the same way, with the same validation, the same errors and the
same bytes.
"""

import time
from collections.abc import AsyncGenerator, AsyncIterator

import structlog
from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api import decode
from api.errors import HANDLERS, Handler, error_response
from api.responses import NOSNIFF
from api.sse import EVENTS, TOOL_CALLS, send_event_stream, stream
from api.state import Services
from api.workspace import record_calls
from orchestrator.errors import OrchestrationError
from orchestrator.feed import StreamKind
from orchestrator.ids import request_id

WORKSPACES = "/api/v1/workspaces/"
STREAMS = {"/orchestration/events": EVENTS, "/orchestration/log/stream": TOOL_CALLS}
STREAM_PARAMS = {"since_seq"}
RECORD = "/orchestration/log"
RECORD_ENDPOINT = "post_log"  # its endpoint in the metrics, as the app's route is named
JSON_TYPE = (b"content-type", b"application/json")


def workspace_route(path: str) -> tuple[str, str] | None:
    """(workspace id, the rest of the path) of a workspace's route, as the app's routing
    would match it (the id is any non-empty segment; it is validated afterwards)."""
    if not path.startswith(WORKSPACES):
        return None
    workspace_id, slash, rest = path[len(WORKSPACES) :].partition("/")
    return (workspace_id, slash + rest) if workspace_id else None


def stream_route(path: str) -> tuple[str, StreamKind] | None:
    """(workspace id, kind) when ``path`` is one of the SSE routes."""
    route = workspace_route(path)
    kind = None if route is None else STREAMS.get(route[1])
    return None if route is None or kind is None else (route[0], kind)


def record_route(path: str) -> str | None:
    """The workspace id when ``path`` is the route that records tool calls."""
    route = workspace_route(path)
    return route[0] if route is not None and route[1] == RECORD else None


class FastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            method = scope["method"]
            if method == "GET" and (route := stream_route(scope["path"])) is not None:
                # Awaited from here, not from a helper coroutine: one frame fewer per stream.
                try:
                    body = open_stream(scope, *route)
                except OrchestrationError as exc:
                    await error_response(exc)(scope, receive, send)
                else:
                    await send_event_stream(body, receive, send)
                return
            if method == "POST" and (workspace_id := record_route(scope["path"])) is not None:
                await record(scope, receive, send, workspace_id)
                return
        await self.app(scope, receive, send)


def bind_request(scope: Scope) -> None:
    # As api.app.BindRequest does for every other request.
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id(), path=scope["path"])


def open_stream(scope: Scope, workspace_id: str, kind: StreamKind) -> AsyncGenerator[bytes]:
    """The stream's body, once the request is found valid."""
    bind_request(scope)
    since = resume_point(scope, workspace_id)
    services: Services = scope["state"]["services"]
    return stream(services.feed, services.eventlog, services.settings, workspace_id, kind, since)


def resume_point(scope: Scope, workspace_id: str) -> int | None:
    """Checked in the order of api.workspace._sse: the id, the parameters, the resume point."""
    decode.valid_id("workspaceID", workspace_id)
    params = QueryParams(scope["query_string"])
    decode.known_params(params, STREAM_PARAMS)
    last_event_id = header(scope, b"last-event-id")
    return decode.resume_point(last_event_id, params)


async def record(scope: Scope, receive: Receive, send: Send, workspace_id: str) -> None:
    """``POST /log``, in the order of api.workspace.post_log: the id, the body, the rest."""
    started = time.perf_counter()
    bind_request(scope)
    services: Services = scope["state"]["services"]
    try:
        decode.valid_id("workspaceID", workspace_id)
        declared = header(scope, b"content-length")
        chunks = body_chunks(receive)
        raw = await decode.limited_body(declared, chunks, services.settings.max_body_bytes)
        key = header(scope, b"idempotency-key")
        body = await record_calls(services, workspace_id, raw, key)
    except ClientDisconnect:
        return
    except Exception as exc:
        response = await handler_of(exc)(Request(scope, receive), exc)
        count(services, started, response.status_code)
        await response(scope, receive, send)
        return
    count(services, started, 201)
    headers = [(b"content-length", b"%d" % len(body)), JSON_TYPE, NOSNIFF]  # as api.responses
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a header (ASGI servers give names in lower case)."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def handler_of(exc: Exception) -> Handler:
    """The app's handler for ``exc`` (api.errors.HANDLERS, by the exception's classes)."""
    return next(HANDLERS[cls] for cls in type(exc).__mro__ if cls in HANDLERS)


def count(services: Services, started: float, status: int) -> None:
    """As api.metrics.CountRequests counts the app's responses."""
    services.metrics.count(RECORD_ENDPOINT, "POST", status, time.perf_counter() - started)
