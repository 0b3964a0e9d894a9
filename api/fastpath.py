"""The two SSE routes, served straight from ASGI ahead of the Starlette app.

One process holds thousands of SSE connections for hours, and everything suspended under
each of them is memory held per client. Through Starlette a stream sits under the middleware,
routing, request_response and exception-wrapper coroutines, with a Request and its scope
additions (~7.5 KB a connection, bench/capacity.py); served here it sits under one frame.

Only an exact ``GET`` of ``/events`` or ``/log/stream`` is taken; anything else (``HEAD``, a
trailing slash, any other route) goes to the app, which keeps the same routes and serves them
the same way, with the same validation, the same errors and the same bytes.
"""

from collections.abc import AsyncGenerator

import structlog
from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from api import decode
from api.errors import error_response
from api.sse import EVENTS, TOOL_CALLS, send_event_stream, stream
from api.state import Services
from orchestrator.errors import OrchestrationError
from orchestrator.feed import StreamKind
from orchestrator.ids import mint

WORKSPACES = "/api/v1/workspaces/"
STREAMS = {"/orchestration/events": EVENTS, "/orchestration/log/stream": TOOL_CALLS}
STREAM_PARAMS = {"since_seq"}


def stream_route(path: str) -> tuple[str, StreamKind] | None:
    """(workspace id, kind) when ``path`` is one of the SSE routes, as the app's routing
    would match it (the id is any non-empty segment; it is validated afterwards)."""
    if not path.startswith(WORKSPACES):
        return None
    workspace_id, slash, rest = path[len(WORKSPACES) :].partition("/")
    kind = STREAMS.get(slash + rest)
    return None if kind is None or not workspace_id else (workspace_id, kind)


class SSEFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            route = stream_route(scope["path"])
            if route is not None:
                # Awaited from here, not from a helper coroutine: one frame fewer per stream.
                try:
                    body = open_stream(scope, *route)
                except OrchestrationError as exc:
                    await error_response(exc)(scope, receive, send)
                else:
                    await send_event_stream(body, receive, send)
                return
        await self.app(scope, receive, send)


def open_stream(scope: Scope, workspace_id: str, kind: StreamKind) -> AsyncGenerator[bytes]:
    """The stream's body, once the request is found valid."""
    # As api.app.BindRequest does for every other request.
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=mint("req"), path=scope["path"])
    since = resume_point(scope, workspace_id)
    services: Services = scope["state"]["services"]
    return stream(services.feed, services.eventlog, services.settings, workspace_id, kind, since)


def resume_point(scope: Scope, workspace_id: str) -> int | None:
    """Checked in the order of api.workspace._sse: the id, the parameters, the resume point."""
    decode.valid_id("workspaceID", workspace_id)
    params = QueryParams(scope["query_string"])
    decode.known_params(params, STREAM_PARAMS)
    last_event_id = next(
        (value.decode("latin-1") for name, value in scope["headers"] if name == b"last-event-id"),
        None,
    )
    return decode.resume_point(last_event_id, params)
