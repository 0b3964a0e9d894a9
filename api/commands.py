"""Running a domain command from a request: decode, decide on the plan, answer its JSON."""

from collections.abc import Callable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from api import decode
from api.responses import raw_json
from api.state import services
from orchestrator.clock import now_ms
from orchestrator.model import Plan
from orchestrator.plan import Decision

T = TypeVar("T")
DecideAt = Callable[[Plan, int], Decision]


async def run(
    request: Request, operation: str, raw: bytes, decide: DecideAt, status: int = 200
) -> Response:
    """Decide at the current time on the workspace's plan; the answer is the decision's
    result. ``operation`` scopes the Idempotency-Key."""
    ws = decode.path_id(request, "workspaceID")
    idem = decode.idempotency(request, operation, raw)
    orch = services(request).orchestrator
    result = await orch.command(ws, lambda plan: decide(plan, now_ms()), idem)
    if result == b"null":
        return Response(status_code=204)
    return raw_json(result, status)


async def with_body(
    request: Request,
    type_: type[T],
    operation: str,
    decide: Callable[[Plan, T, int], Decision],
    status: int = 200,
) -> Response:
    """``run`` with the request body decoded into ``type_`` and handed to ``decide``."""
    raw = await decode.body(request)
    given = decode.decode(raw, type_)
    return await run(request, operation, raw, lambda plan, now: decide(plan, given, now), status)


async def plan(request: Request) -> Plan:
    """The workspace's plan as of every event appended so far."""
    ws = decode.path_id(request, "workspaceID")
    return await services(request).views.current_plan(ws)
