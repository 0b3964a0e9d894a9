"""A projector process for the crash tests: ``python tests/projector_worker.py URL WORKSPACE``.

It runs the real projections plus ``CountingProjection``, which is deliberately not idempotent
(it increments counters), in small batches, until every projection has reached the last seq.
Tests SIGKILL it at random moments: any event applied twice or skipped shows in the counters.
"""

import asyncio
import sys

from redis.asyncio import Redis

from orchestrator.eventlog import EventLog
from orchestrator.events import StoredEvent
from orchestrator.keys import WorkspaceKeys
from projections.base import Command, Projection
from projections.runner import Projector, all_projections

BATCH = 7


class CountingProjection:
    """Counts every event it is fed: ``events`` in total and ``seq:<n>`` per event."""

    name = "test_count"

    @staticmethod
    def key(keys: WorkspaceKeys) -> str:
        return f"{keys.prefix}:test:count"

    def apply(self, keys: WorkspaceKeys, event: StoredEvent) -> list[Command]:
        return [
            ("HINCRBY", self.key(keys), "events", 1),
            ("HINCRBY", self.key(keys), f"seq:{event.seq}", 1),
        ]

    def drop(self, keys: WorkspaceKeys) -> list[Command]:
        return [("DEL", self.key(keys))]


def worker_projections() -> list[Projection]:
    return [*all_projections(), CountingProjection()]


async def run(url: str, workspace_id: str, batch: int = BATCH) -> int:
    redis = Redis.from_url(url)
    try:
        eventlog = EventLog(redis, retention=0, idempotency_ttl_ms=60_000)
        projector = Projector(eventlog, worker_projections(), batch=batch)
        target = await eventlog.last_seq(workspace_id)
        reached = -1
        while reached < target:
            reached = await projector.catch_up(workspace_id)
        print(f"caught up to {reached}", flush=True)
        return 0
    finally:
        await redis.aclose()


if __name__ == "__main__":
    sys.exit(asyncio.run(run(sys.argv[1], sys.argv[2])))
