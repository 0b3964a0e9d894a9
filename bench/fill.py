"""Shared by the replay, log-query and rebuild workloads: a large, realistic log, fast.

Calls go straight to ``EventLog.append`` (the same Lua script the API uses) in batches of
1000, several batches in flight at once, so 1,000,000 events take seconds rather than the
minutes a request per call would. Projections then catch up through ``Projector.catch_up``,
the path live projection and ``orchestrator rebuild`` use.

The values are spread so that filter selectivities differ by orders of magnitude: 20 tools
and 4 statuses (both skewed), 50 agents, 500 sessions, 20,000 TODO entries, 100 containers
(absent on a third of the calls) and a unique callID per call.
"""

import asyncio
import gc
import random
import time
from collections.abc import Iterator
from typing import Any

from orchestrator.connection import connect
from orchestrator.eventlog import EventLog
from orchestrator.events import (
    ConfigUpdated,
    NewEvent,
    Question,
    QuestionAnswered,
    QuestionItem,
    QuestionOption,
    ToolCall,
    ToolRef,
    new_event,
)
from projections.runner import Projector

BATCH = 1000
IN_FLIGHT = 4
START_MS = 1_760_000_000_000

TOOLS = [
    "fs.read", "fs.write", "fs.list", "fs.search", "shell.run", "git.diff", "git.commit",
    "git.status", "net.fetch", "net.search", "py.test", "py.lint", "py.format", "db.query",
    "db.migrate", "docker.build", "docker.run", "todo.update", "ask.human", "browser.open",
]  # fmt: skip
STATUSES = ["ok", "error", "intercepted", "denied"]
STATUS_WEIGHTS = [70, 20, 7, 3]
TOOL_WEIGHTS = [1 / (rank + 1) for rank in range(len(TOOLS))]  # Zipf: fs.read most common
SESSIONS = 500
AGENTS = 50
ENTRIES = 20_000
CONTAINERS = 100
CORRECTION = [{"field": "target", "was": "/tmp"}]


def _columns(rng: random.Random, count: int) -> dict[str, list[Any]]:
    """Each field's values for ``count`` calls, drawn column by column (fast)."""
    k = count
    return {
        "tool": rng.choices(TOOLS, TOOL_WEIGHTS, k=k),
        "status": rng.choices(STATUSES, STATUS_WEIGHTS, k=k),
        "session": [rng.randrange(SESSIONS) for _ in range(k)],
        "entry": [rng.randrange(ENTRIES) if rng.random() < 0.8 else None for _ in range(k)],
        "container": [rng.randrange(CONTAINERS) if rng.random() < 0.67 else None for _ in range(k)],
        "target": [rng.randrange(300) if rng.random() < 0.6 else None for _ in range(k)],
        "jitter": [rng.randrange(40) for _ in range(k)],
        "duration": [rng.randrange(1, 5000) for _ in range(k)],
        "flags": [rng.random() for _ in range(k)],
    }


def _call(n: int, i: int, col: dict[str, list[Any]], workspace: str) -> ToolCall:
    tool, session, entry = col["tool"][i], col["session"][i], col["entry"][i]
    container, target, flag = col["container"][i], col["target"][i], col["flags"][i]
    return ToolCall(
        tool=tool,
        sessionID=f"ses_{session:04d}",
        callID=f"call_{n:08d}",
        entryID=None if entry is None else f"entry_{entry:05d}",
        title=f"{tool} #{n}" if flag < 0.5 else None,
        timestamp=START_MS + n * 10 + col["jitter"][i],  # ~100 calls/s, a few out of order
        duration=col["duration"][i],
        status=col["status"][i],
        corrections=CORRECTION if flag > 0.9 else [],
        target=None if target is None else f"/repo/src/module_{target}.py",
        agentName=f"agent-{session % AGENTS:02d}",  # a session belongs to one agent
        container_id=None if container is None else f"ctr_{container:03d}",
        workspaceID=workspace,
    )


def tool_call_events(workspace: str, count: int, seed: int = 7, start: int = 0) -> list[NewEvent]:
    """``count`` ``tool.call`` events, numbered from ``start`` (callID, timestamp); the same
    for the same arguments."""
    col = _columns(random.Random(seed), count)
    enabled = gc.isenabled()
    gc.disable()  # millions of young objects: the collector would dominate
    try:
        return [new_event(_call(start + i, i, col, workspace)) for i in range(count)]
    finally:
        if enabled:
            gc.enable()


def mixed_events(workspace: str, count: int, seed: int = 7) -> list[NewEvent]:
    """A history as a workspace makes it: of every 20 events, 17 tool calls, a question asked,
    that question answered, and a config update."""
    events = tool_call_events(workspace, count, seed)
    options = [QuestionOption("yes"), QuestionOption("no", "stop here")]
    for i in range(3, count, 20):
        qid = f"que_{i:08d}"
        session = f"ses_{i % SESSIONS:04d}"
        question = Question(
            id=qid,
            sessionID=session,
            questions=[QuestionItem("Apply the migration?", "Confirm", options)],
            tool=ToolRef(f"msg_{i}", f"call_{i:08d}"),
        )
        events[i] = new_event(question, qid)
        if i + 6 < count:
            events[i + 6] = new_event(QuestionAnswered(qid, session, [["yes"]]), qid)
        if i + 12 < count:
            config = {"executor": {"max_workers": i % 8 + 1}, "note": f"update {i}"}
            events[i + 12] = new_event(ConfigUpdated(patch=config, config=config), "config")
    return events


def batches(events: list[NewEvent], size: int = BATCH) -> Iterator[list[NewEvent]]:
    for start in range(0, len(events), size):
        yield events[start : start + size]


async def append_events(redis_url: str, workspace: str, events: list[NewEvent]) -> float:
    """Append ``events`` in batches, ``IN_FLIGHT`` at a time; returns the seconds taken."""
    async with connect(redis_url) as redis:
        eventlog = EventLog(redis, retention=0, idempotency_ttl_ms=60_000)
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def one(batch: list[NewEvent]) -> None:
            async with gate:
                await eventlog.append(workspace, batch)

        started = time.perf_counter()
        # Seqs are allocated atomically per batch: concurrent batches interleave whole.
        await asyncio.gather(*(one(b) for b in batches(events)))
        return time.perf_counter() - started


async def catch_up(redis_url: str, workspace: str) -> tuple[int, float]:
    """Project every event of ``workspace``; returns (seq reached, seconds taken)."""
    async with connect(redis_url) as redis:
        projector = Projector(EventLog(redis, retention=0, idempotency_ttl_ms=60_000))
        started = time.perf_counter()
        reached = await projector.catch_up(workspace)
        return reached, time.perf_counter() - started


def append(redis_url: str, workspace: str, events: list[NewEvent]) -> float:
    """Append ``events`` to ``workspace``; returns the rate (events/s)."""
    seconds = asyncio.run(append_events(redis_url, workspace, events))
    return len(events) / seconds


def project(redis_url: str, workspace: str) -> tuple[int, float]:
    """Catch the read models of ``workspace`` up; returns (seq reached, events/s)."""
    reached, seconds = asyncio.run(catch_up(redis_url, workspace))
    return reached, reached / seconds if seconds else 0.0
