"""Exactly-once projection under crashes: projector processes SIGKILLed at random moments.

``tests/projector_worker.py`` projects with a counting (non-idempotent) projection next to the
real ones. Whatever moment a worker dies at, and however many run at once, every event must
be counted exactly once, the checkpoints must reach the last seq, and the read models must
equal a fresh rebuild.
"""

import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from redis.asyncio import Redis

from orchestrator.eventlog import EventLog
from orchestrator.keys import WorkspaceKeys
from projections.runner import Projector
from tests.projector_worker import CountingProjection, worker_projections
from tests.test_projector import append_all, history, snapshot

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "projector_worker.py"
EVENTS = 3000
NAMES = [p.name for p in worker_projections()]


@dataclass
class Workers:
    """Worker processes for one workspace; their output goes to one log file per start."""

    redis_url: str
    workspace: str
    logs: Path
    started: list[Process] = field(default_factory=list)

    async def start(self) -> Process:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        log = self.logs / f"worker-{len(self.started)}.log"
        with log.open("wb") as out:
            process = await anyio.open_process(
                [sys.executable, str(WORKER), self.redis_url, self.workspace],
                cwd=ROOT,
                env=env,
                stdin=None,
                stdout=out,
                stderr=out,
            )
        self.started.append(process)
        return process

    async def kill(self, process: Process) -> None:
        if process.returncode is None:
            process.kill()
        await process.wait()

    async def finish(self, process: Process) -> None:
        with anyio.fail_after(20):
            code = await process.wait()
        output = self.logs / f"worker-{self.started.index(process)}.log"
        assert code == 0, output.read_text()

    async def aclose(self) -> None:
        for process in self.started:
            await self.kill(process)
            await process.aclose()


@pytest.fixture
async def workers(redis_url: str, workspace: str, tmp_path: Path) -> AsyncIterator[Workers]:
    started = Workers(redis_url, workspace, tmp_path)
    try:
        yield started
    finally:
        await started.aclose()


async def counted(client: Redis, workspace: str) -> int:
    keys = WorkspaceKeys(workspace)
    return int(await client.hget(keys.checkpoints, CountingProjection.name) or 0)


async def kill_mid_way(
    client: Redis, workers: Workers, process: Process, rng: random.Random
) -> tuple[int, int]:
    """Wait until ``process`` (or any worker) makes progress, then SIGKILL it after a random
    delay. Returns the counting checkpoint before and after."""
    before = await counted(client, workers.workspace)
    with anyio.fail_after(10):
        while process.returncode is None:
            if await counted(client, workers.workspace) != before:
                break
            await anyio.sleep(0.002)
    await anyio.sleep(rng.uniform(0, 0.06))
    await workers.kill(process)
    after = await counted(client, workers.workspace)
    print(f"killed worker {workers.started.index(process)}: counted {before} -> {after}")
    return before, after


async def check_exactly_once(client: Redis, workspace: str, last: int) -> None:
    keys = WorkspaceKeys(workspace)
    count = await client.hgetall(CountingProjection.key(keys))
    assert int(count.pop(b"events")) == last
    assert count == {f"seq:{s}".encode(): b"1" for s in range(1, last + 1)}, {
        k: v for k, v in count.items() if v != b"1"
    }
    projector = Projector(EventLog(client, 0, 60_000), worker_projections())
    assert await projector.checkpoints(workspace) == dict.fromkeys(NAMES, last)

    # The read models equal a fresh rebuild of them all.
    projected = await snapshot(client, workspace)
    assert await projector.rebuild(workspace) == last
    assert await snapshot(client, workspace) == projected


async def seed(client: Redis, workspace: str) -> int:
    log = EventLog(client, retention=0, idempotency_ttl_ms=60_000)
    last = await append_all(log, workspace, history(EVENTS, seed=42))
    assert last == EVENTS
    return last


@pytest.mark.anyio
async def test_killed_projector_applies_every_event_exactly_once(
    client: Redis, workspace: str, workers: Workers
) -> None:
    last = await seed(client, workspace)
    seed_ = time.time_ns()
    print(f"random seed {seed_}")
    rng = random.Random(seed_)
    interrupted = 0
    for _ in range(6):
        process = await workers.start()
        before, after = await kill_mid_way(client, workers, process, rng)
        interrupted += before < after < last
        if after == last:
            break
    assert interrupted >= 3, "the worker was never killed mid-way: too fast for this test"
    await workers.finish(await workers.start())
    await check_exactly_once(client, workspace, last)


@pytest.mark.anyio
async def test_two_projectors_killed_at_random_apply_every_event_exactly_once(
    client: Redis, workspace: str, workers: Workers
) -> None:
    last = await seed(client, workspace)
    seed_ = time.time_ns()
    print(f"random seed {seed_}")
    rng = random.Random(seed_)
    running = [await workers.start(), await workers.start()]
    interrupted = 0
    for _ in range(5):
        victim = rng.randrange(2)
        before, after = await kill_mid_way(client, workers, running[victim], rng)
        interrupted += before < after < last
        if after == last:
            break
        running[victim] = await workers.start()
    assert interrupted >= 2, "no worker was killed mid-way: too fast for this test"
    for process in running:
        if process.returncode != -signal.SIGKILL:
            await workers.finish(process)
    await check_exactly_once(client, workspace, last)


@pytest.mark.anyio
async def test_two_projectors_at_once_apply_every_event_exactly_once(
    client: Redis, workspace: str, workers: Workers
) -> None:
    last = await seed(client, workspace)
    running = [await workers.start(), await workers.start()]
    for process in running:
        await workers.finish(process)
    await check_exactly_once(client, workspace, last)
