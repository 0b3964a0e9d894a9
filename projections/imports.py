"""The import jobs read model: each job as of its last event (events carry the whole job)."""

import msgspec
from redis.asyncio import Redis

from orchestrator.events import (
    ImportCompleted,
    ImportEvent,
    ImportFailed,
    ImportProgress,
    ImportStarted,
    OrchestrationPurged,
    StoredEvent,
)
from orchestrator.keys import WorkspaceKeys
from orchestrator.replies import as_bytes
from orchestrator.transfer import ImportJob
from projections.base import Command

RELEVANT = frozenset(
    cls.type
    for cls in (ImportStarted, ImportProgress, ImportCompleted, ImportFailed, OrchestrationPurged)
)
_encode = msgspec.json.Encoder().encode
_decode_job = msgspec.json.Decoder(ImportJob).decode


class ImportsProjection:
    name = "imports"

    def apply(self, keys: WorkspaceKeys, event: StoredEvent) -> list[Command]:
        if event.type not in RELEVANT:
            return []
        payload = event.decode()
        if isinstance(payload, OrchestrationPurged):
            return self.drop(keys)
        assert isinstance(payload, ImportEvent)
        return [("HSET", keys.imports, payload.jobID, _encode(payload.job))]

    def drop(self, keys: WorkspaceKeys) -> list[Command]:
        return [("DEL", keys.imports)]


async def read_job(redis: Redis, workspace_id: str, job_id: str) -> ImportJob | None:
    raw = await redis.hget(WorkspaceKeys(workspace_id).imports, job_id)
    return None if raw is None else _decode_job(as_bytes(raw))
