"""The executor, its workers and locks, and the budget."""

from starlette.requests import Request
from starlette.responses import Response

from api import commands, decode
from api.responses import JSON
from api.state import services
from orchestrator import budget, executor, workers
from orchestrator.clock import now_ms


def _limits(request: Request) -> executor.Limits:
    return services(request).settings.limits


async def status(request: Request) -> Response:
    plan = await commands.plan(request)
    ws = decode.path_id(request, "workspaceID")
    holder = await services(request).dispatcher.holder(ws)
    return JSON(executor.status_view(plan, now_ms(), _limits(request), holder))


async def _watch(request: Request) -> None:
    """Have the dispatchers look after the workspace: they dispatch it while it runs, and
    always expire its worker leases and unclaimed entries."""
    await services(request).dispatcher.register(decode.path_id(request, "workspaceID"))


async def start(request: Request) -> Response:
    response = await commands.run(request, "executor-start", b"", executor.decide_start)
    await _watch(request)
    return response


async def pause(request: Request) -> Response:
    return await commands.run(request, "executor-pause", b"", executor.decide_pause)


async def resume(request: Request) -> Response:
    return await commands.run(request, "executor-resume", b"", executor.decide_resume)


async def stop_all(request: Request) -> Response:
    return await commands.run(request, "executor-stop", b"", executor.decide_stop_all)


async def force_dispatch(request: Request) -> Response:
    limits = _limits(request)
    response = await commands.run(
        request,
        "force-dispatch",
        b"",
        lambda plan, now: executor.decide_cycle(plan, now, limits, force=True),
    )
    await _watch(request)  # what it dispatched must expire though the executor never started
    return response


async def list_workers(request: Request) -> Response:
    return JSON(workers.workers_view(await commands.plan(request)))


async def list_locks(request: Request) -> Response:
    return JSON(workers.locks_view(await commands.plan(request)))


async def claim(request: Request) -> Response:
    raw = await decode.body(request)
    given = decode.decode(raw, workers.ClaimInput)
    limits = _limits(request)
    response = await commands.run(
        request,
        f"claim:{given.sessionID}",
        raw,
        lambda plan, now: workers.decide_claim(plan, given.sessionID, now, limits),
    )
    if response.status_code == 200:
        await _watch(request)  # a lease must expire when its worker goes quiet
    return response


def _lease_id(request: Request) -> str:
    return decode.path_id(request, "leaseID")


async def heartbeat(request: Request) -> Response:
    lease_id = _lease_id(request)
    limits = _limits(request)
    return await commands.run(
        request,
        f"heartbeat:{lease_id}",
        await decode.body(request),
        lambda plan, now: workers.decide_heartbeat(plan, lease_id, now, limits),
    )


async def complete(request: Request) -> Response:
    lease_id = _lease_id(request)
    raw = await decode.body(request)
    given = decode.decode(raw, workers.CompleteInput) if raw.strip() else workers.CompleteInput()
    return await commands.run(
        request,
        f"complete:{lease_id}",
        raw,
        lambda plan, now: workers.decide_complete(plan, lease_id, given, now),
    )


async def fail(request: Request) -> Response:
    lease_id = _lease_id(request)
    raw = await decode.body(request)
    given = decode.decode(raw, workers.FailInput) if raw.strip() else workers.FailInput()
    limits = _limits(request)
    return await commands.run(
        request,
        f"fail:{lease_id}",
        raw,
        lambda plan, now: workers.decide_fail(plan, lease_id, given, now, limits),
    )


async def get_budget(request: Request) -> Response:
    plan = await commands.plan(request)
    return JSON(budget.budget_view(plan, now_ms(), _limits(request)))


async def patch_budget(request: Request) -> Response:
    raw = await decode.body(request)
    patch = decode.json_object(raw)
    limits = _limits(request)
    return await commands.run(
        request, "budget", raw, lambda plan, now: budget.decide_caps(plan, patch, now, limits)
    )


async def report_usage(request: Request) -> Response:
    raw = await decode.body(request)
    given = decode.decode(raw, budget.UsageInput)
    limits = _limits(request)
    return await commands.run(
        request,
        "usage",
        raw,
        lambda plan, now: budget.decide_usage(plan, given, now, limits),
        status=201,
    )
