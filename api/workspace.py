"""Workspace-level endpoints: config, events, log, debug dump, purge."""

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api import decode
from api.responses import JSON, NOSNIFF_HEADERS, encode_json, raw_json
from api.sse import EVENTS, TOOL_CALLS, EventStreamResponse, stream
from api.state import Services, services
from orchestrator import config, purge, toolcalls
from orchestrator import results as r
from orchestrator.errors import InvalidInput
from orchestrator.feed import StreamKind
from orchestrator.keys import LOG_FILTER_FIELDS
from projections.dump import debug_dump
from projections.log import LogQuery

LOG_PARAMS = {"page", "limit", "from", "to", "order", *LOG_FILTER_FIELDS}
MAX_FILTER_VALUE = 256


async def get_config(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    return JSON(await config.get_config(services(request).orchestrator, ws))


async def patch_config(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    raw = await decode.body(request)
    patch = decode.json_object(raw)
    idem = decode.idempotency(request, "config", raw)
    return JSON(await config.update_config(services(request).orchestrator, ws, patch, idem))


def _sse(request: Request, kind: StreamKind) -> Response:
    ws = decode.path_id(request, "workspaceID")
    decode.only_params(request, {"since_seq"})
    since = decode.since_seq(request)
    s = services(request)
    return EventStreamResponse(stream(s.feed, s.eventlog, s.settings, ws, kind, since))


async def events(request: Request) -> Response:
    return _sse(request, EVENTS)


async def log_stream(request: Request) -> Response:
    return _sse(request, TOOL_CALLS)


async def events_connections(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    return JSON(r.Count(count=await services(request).subscribers.total(ws)))


def _log_query(request: Request) -> LogQuery:
    decode.only_params(request, LOG_PARAMS)
    params = request.query_params
    filters = {f: params[f] for f in LOG_FILTER_FIELDS if f in params}
    for name, value in filters.items():
        if not 1 <= len(value) <= MAX_FILTER_VALUE:
            raise InvalidInput(
                f"{name} must be 1 to {MAX_FILTER_VALUE} characters", {"parameter": name}
            )
    order = params.get("order", "asc")
    if order not in ("asc", "desc"):
        raise InvalidInput("order must be asc or desc", {"parameter": "order"})
    bound = 2**53
    return LogQuery(
        filters=filters,
        from_ms=None
        if "from" not in params
        else decode.integer("from", params["from"], 0, 0, bound),
        to_ms=None if "to" not in params else decode.integer("to", params["to"], 0, 0, bound),
        page=decode.integer("page", params.get("page"), 1, 1, 10**9),
        limit=decode.integer(
            "limit", params.get("limit"), 50, 1, decode.settings(request).max_page_limit
        ),
        descending=order == "desc",
    )


async def get_log(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    page = await services(request).views.log(ws, _log_query(request))
    meta = JSON(r.PageMeta(page=page.page, limit=page.limit, total=page.total, pages=page.pages))
    return raw_json(b'{"items":[' + b",".join(page.items) + b'],"meta":' + meta.body + b"}")


async def post_log(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    raw = await decode.body(request)
    key = request.headers.get("idempotency-key")
    return raw_json(await record_calls(services(request), ws, raw, key), 201)


async def record_calls(s: Services, ws: str, raw: bytes, idempotency_key: str | None) -> bytes:
    """POST /log after its path and body are read (shared with api.fastpath)."""
    inputs = decode.tool_calls(raw)
    idem = decode.idempotency_key(idempotency_key, "log", raw)
    recorded = await toolcalls.record_tool_calls(s.orchestrator, ws, inputs, idem)
    items = [r.RecordedCall(seq=c.seq, callID=c.callID) for c in recorded]
    return encode_json(r.Recorded(items=items))


async def get_debug_dump(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    s = services(request)
    await s.views.current(ws)
    caches = {
        "replica": s.subscribers.replica_id,
        "projected_seq": s.projector.active().get(ws),
        "feed": s.feed.state(ws),
    }
    body = debug_dump(s.redis, s.eventlog, s.projector, ws, caches, s.settings.replay_batch)
    return StreamingResponse(body, media_type="application/json", headers=NOSNIFF_HEADERS)


async def post_purge(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    raw = await decode.body(request)
    idem = decode.idempotency(request, "purge", raw)
    return JSON(r.Purged(purged=await purge.purge(services(request).orchestrator, ws, idem)))
