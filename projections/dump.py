"""The debug dump: everything needed to reconstruct a workspace's live state, streamed.

The dump is one JSON object written section by section; the event log and the tool-call log
are streamed in batches, so a dump is never built whole in memory.
"""

from collections.abc import AsyncIterator, Mapping

import msgspec
from redis.asyncio import Redis

from orchestrator.clock import now_ms
from orchestrator.eventlog import EventLog
from orchestrator.keys import WorkspaceKeys
from orchestrator.replies import as_int, as_str
from projections.config import read_config
from projections.log import iter_calls
from projections.plan import read_memory, read_plan
from projections.questions import pending_questions
from projections.runner import Projector

_encode = msgspec.json.encode


async def debug_dump(
    redis: Redis,
    eventlog: EventLog,
    projector: Projector,
    workspace_id: str,
    caches: Mapping[str, object],
    batch: int = 1000,
) -> AsyncIterator[bytes]:
    """``caches`` is the serving replica's in-memory state for the workspace."""
    keys = WorkspaceKeys(workspace_id)
    first, last = await eventlog.bounds(workspace_id)
    config, config_version = await read_config(redis, workspace_id)
    questions = await pending_questions(redis, workspace_id, now_ms=0)
    sessions = sorted(as_str(s) for s in await redis.smembers(keys.sessions))
    versions = await redis.hgetall(keys.versions)
    plan = await read_plan(redis, workspace_id)
    memory = {p: await read_memory(redis, workspace_id, p) for p in sorted(plan.phases)}
    dispatcher = await redis.get(keys.dispatcher)
    head = {
        "workspaceID": workspace_id,
        "generated_at": now_ms(),
        "log": {"first_seq": first, "last_seq": last, "stream": keys.events},
        "config": config,
        "config_version": config_version,
        "projections": await projector.checkpoints(workspace_id),
        "versions": {as_str(k): as_int(v) for k, v in versions.items()},
        "sessions": sessions,
        "questions": [msgspec.Raw(q.raw) for q in questions],
        "todo": {
            "id": plan.todo.id if plan.todo else None,
            "version": plan.version,
            "created_at": plan.todo.created_at if plan.todo else None,
            "project_context": plan.todo.project_context if plan.todo else "",
            "next_seq": plan.todo.next_seq if plan.todo else 1,
            "entries": plan.ordered_entries(),
        },
        "phases": plan.ordered_phases(),
        "memory": memory,
        "executor": plan.executor,
        "dispatcher": None if dispatcher is None else as_str(dispatcher),
        "budgets": {"caps": plan.caps, "usage": plan.usage, "tool_calls": plan.tool_calls},
        "leases": sorted(plan.leases.values(), key=lambda x: x.granted_at),
        "locks": sorted(plan.locks.values(), key=lambda x: x.file),
        "caches": caches,
    }
    yield _encode(head)[:-1]  # keep the object open for the streamed sections

    yield b',"events":['
    position, separator = 0, b""
    while True:
        events = await eventlog.read(workspace_id, position, batch)
        if not events or events[0].seq > last:
            break
        chunk = b",".join(_encode(e) for e in events if e.seq <= last)
        yield separator + chunk
        separator, position = b",", events[-1].seq
        if position >= last:
            break

    yield b'],"tool_logs":['
    separator = b""
    async for calls in iter_calls(redis, workspace_id, batch):
        yield separator + b",".join(calls)
        separator = b","
    yield b"]}"
