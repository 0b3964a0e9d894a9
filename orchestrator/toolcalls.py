"""Recording the tool calls agents make (``tool.call`` events)."""

from typing import Annotated, Any

import msgspec

from orchestrator.clock import now_ms
from orchestrator.context import Orchestrator
from orchestrator.errors import TooLarge, ValidationFailed
from orchestrator.eventlog import Idempotency
from orchestrator.events import EpochMs, Name, SessionID, Status, Text, ToolCall, encode, new_event
from orchestrator.ids import mint


class ToolCallInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A tool call as an agent posts it; the service fills in what is left out."""

    tool: Name
    sessionID: SessionID
    agentName: Name
    status: Status
    callID: Name | None = None
    entryID: Name | None = None
    title: Text | None = None
    timestamp: EpochMs | None = None
    duration: Annotated[int, msgspec.Meta(ge=0, le=2**53)] = 0
    corrections: Annotated[list[Any], msgspec.Meta(max_length=256)] = msgspec.field(
        default_factory=list
    )
    target: Text | None = None
    container_id: Name | None = None
    workspaceID: str | None = None


class ToolCallBatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    items: list[ToolCallInput]


class Recorded(msgspec.Struct, frozen=True):
    seq: int
    callID: str


def complete(workspace_id: str, given: ToolCallInput, index: int, now: int) -> ToolCall:
    if given.workspaceID not in (None, workspace_id):
        raise ValidationFailed(
            f"workspaceID {given.workspaceID!r} does not match the workspace in the path",
            {"path": f"$[{index}].workspaceID"},
        )
    return ToolCall(
        tool=given.tool,
        sessionID=given.sessionID,
        callID=given.callID or mint("call"),
        entryID=given.entryID,
        title=given.title,
        timestamp=now if given.timestamp is None else given.timestamp,
        duration=given.duration,
        status=given.status,
        corrections=given.corrections,
        target=given.target,
        agentName=given.agentName,
        container_id=given.container_id,
        workspaceID=workspace_id,
    )


async def record_tool_calls(
    orch: Orchestrator,
    workspace_id: str,
    inputs: list[ToolCallInput],
    idem: Idempotency | None,
) -> list[Recorded]:
    """Append one ``tool.call`` per input, all or none; returns each call's seq and id."""
    if not inputs:
        raise ValidationFailed("items must hold at least one tool call", {"path": "$.items"})
    if len(inputs) > orch.settings.max_batch:
        raise TooLarge(
            f"a batch holds at most {orch.settings.max_batch} tool calls, got {len(inputs)}",
            {"limit": orch.settings.max_batch},
        )
    now = now_ms()
    calls = [complete(workspace_id, given, i, now) for i, given in enumerate(inputs)]
    call_ids = [c.callID for c in calls]
    appended = await orch.eventlog.append(
        workspace_id,
        [new_event(call) for call in calls],
        idempotency=idem,
        result=encode(call_ids),
    )
    # Recording returns no read-model state, so it answers once the events are durable; reads
    # catch the projections up. It waits only when projections fall too far behind, which
    # pushes back on writers rather than letting the lag grow without bound.
    behind = appended.last_seq - orch.settings.projection_max_lag
    if behind > 0:
        await orch.models.wait_for(workspace_id, behind)
    stored_ids = msgspec.json.decode(appended.result, type=list[str])
    return [Recorded(seq, call_id) for seq, call_id in zip(appended.seqs, stored_ids, strict=True)]
