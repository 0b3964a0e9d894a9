"""Purge: clear a workspace's orchestration state but its config; seq goes on."""

from msgspec.structs import replace

from orchestrator.clock import now_ms
from orchestrator.context import Orchestrator
from orchestrator.eventlog import Idempotency
from orchestrator.events import OrchestrationPurged, new_event

# The published response, in its published order.
PURGED = ["todos", "events", "budgets", "tool_logs", "session_ids", "caches"]


async def purge(orch: Orchestrator, workspace_id: str, idem: Idempotency | None) -> list[str]:
    """Pause the executor, drop the stream and append ``orchestration.purged`` as its first
    event, in one step; each projection clears its read model when it applies that event.

    The event carries the config, since the events that built it are dropped; expecting the
    config's version makes a purge racing a config change decide again.
    """
    if await orch.eventlog.recall(workspace_id, idem):
        return PURGED

    async def attempt() -> None:
        config, version = await orch.models.config(workspace_id)
        plan = await orch.models.plan(workspace_id)
        executor = plan.executor
        if executor.status == "running":
            executor = replace(
                executor,
                status="paused",
                reason="paused by purge",
                running_since=None,
                ran_ms=executor.wall_ms(now_ms()),
            )
        purged = OrchestrationPurged(
            purged=PURGED,
            config=config if version else None,
            executor=executor if plan.executor.started_at is not None else None,
        )
        # It changes the config's version only when there is a config to carry.
        event = new_event(purged, "config") if version else new_event(purged)
        expect = {"config": version, "plan": plan.version}
        appended = await orch.eventlog.append(
            workspace_id, [event], expect=expect, idempotency=idem, purge=True
        )
        await orch.models.wait_for(workspace_id, appended.last_seq)

    await orch.decide(workspace_id, "config", attempt)
    return PURGED
