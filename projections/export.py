"""The plan read model as a portable document (``orchestrator.documents``)."""

import msgspec
from redis.asyncio import Redis

from orchestrator.documents import PlanDocument, export
from orchestrator.keys import WorkspaceKeys
from orchestrator.model import MemoryNote, Plan
from projections.plan import read_plan

_decode_note = msgspec.json.Decoder(MemoryNote).decode


async def read_document(redis: Redis, workspace_id: str) -> tuple[PlanDocument, Plan]:
    """The workspace's TODO as a document, and the plan it was made from."""
    plan = await read_plan(redis, workspace_id)
    keys = WorkspaceKeys(workspace_id)
    phase_ids = [p.id for p in plan.ordered_phases()]
    pipe = redis.pipeline(transaction=True)
    for phase_id in phase_ids:
        pipe.lrange(keys.phase_memory(phase_id), 0, -1)
    lists = await pipe.execute() if phase_ids else []
    memory = {
        phase_id: [_decode_note(raw) for raw in notes]
        for phase_id, notes in zip(phase_ids, lists, strict=True)
    }
    return export(plan, memory), plan
