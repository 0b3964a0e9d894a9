"""Purge: clear a workspace's orchestration state but its config; seq goes on."""

from orchestrator.context import Orchestrator
from orchestrator.eventlog import Idempotency
from orchestrator.events import OrchestrationPurged, new_event

# The published response, in its published order.
PURGED = ["todos", "events", "budgets", "tool_logs", "session_ids", "caches"]


async def purge(orch: Orchestrator, workspace_id: str, idem: Idempotency | None) -> list[str]:
    """Drop the stream and append ``orchestration.purged`` as its first event, in one step;
    each projection clears its read model when it applies that event."""
    appended = await orch.eventlog.append(
        workspace_id, [new_event(OrchestrationPurged(purged=PURGED))], idempotency=idem, purge=True
    )
    await orch.models.wait_for(workspace_id, appended.last_seq)
    return PURGED
