"""The set of agent sessions seen in the workspace: tool calls, questions, worker leases and
prompt targets. Per-session figures are read from the tool-call log's session index."""

import msgspec
from redis.asyncio import Redis

from orchestrator.events import (
    LeaseGranted,
    OrchestrationPurged,
    PromptDispatched,
    Question,
    StoredEvent,
    ToolCall,
)
from orchestrator.keys import WorkspaceKeys
from orchestrator.model import Plan
from orchestrator.replies import as_str
from orchestrator.results import Session, Sessions
from projections.base import Command

RELEVANT = frozenset(
    cls.type for cls in (ToolCall, Question, LeaseGranted, PromptDispatched, OrchestrationPurged)
)


class _SessionOf(msgspec.Struct):
    """What the projection needs of any event it reads: decoding only this skips the rest."""

    sessionID: str


_decode_session = msgspec.json.Decoder(_SessionOf).decode


class SessionsProjection:
    name = "sessions"

    def apply(self, keys: WorkspaceKeys, event: StoredEvent) -> list[Command]:
        if event.type not in RELEVANT:
            return []
        payload = event.decode()
        if isinstance(payload, ToolCall | Question | LeaseGranted | PromptDispatched):
            return [("SADD", keys.sessions, payload.sessionID)]
        if isinstance(payload, OrchestrationPurged):
            return self.drop(keys)
        return []

    def apply_batch(self, keys: WorkspaceKeys, events: list[StoredEvent]) -> list[Command]:
        """``apply`` for each event, merged: one SADD of the batch's sessions (between purges)."""
        writes: list[Command] = []
        seen: dict[str, None] = {}
        for event in events:
            if event.type not in RELEVANT:
                continue
            if event.type == OrchestrationPurged.type:
                if seen:
                    writes.append(("SADD", keys.sessions, *seen))
                    seen = {}
                writes += self.drop(keys)
            else:
                seen[_decode_session(event.payload).sessionID] = None
        if seen:
            writes.append(("SADD", keys.sessions, *seen))
        return writes

    def drop(self, keys: WorkspaceKeys) -> list[Command]:
        return [("DEL", keys.sessions)]


async def read_sessions(redis: Redis, workspace_id: str, plan: Plan) -> Sessions:
    """Every session, with its tool-call count, first/last call times (epoch ms), and what
    the plan says of it: the lease it holds, and the phase it drives."""
    leases = {lease.sessionID: lease for lease in plan.leases.values()}
    phases = {p.session_id: p.id for p in plan.phases.values() if p.session_id}
    keys = WorkspaceKeys(workspace_id)
    ids = sorted(as_str(s) for s in await redis.smembers(keys.sessions))
    pipe = redis.pipeline(transaction=False)
    for session_id in ids:
        index = keys.log_index("sessionID", session_id)
        pipe.zcard(index)
        pipe.zrange(index, 0, 0, withscores=True)
        pipe.zrange(index, -1, -1, withscores=True)
    replies = await pipe.execute()
    sessions = []
    for i, session_id in enumerate(ids):
        count, first, last = replies[3 * i : 3 * i + 3]
        lease = leases.get(session_id)
        sessions.append(
            Session(
                id=session_id,
                tool_calls=int(count),
                first_call_at=int(first[0][1]) if first else None,
                last_call_at=int(last[0][1]) if last else None,
                lease=lease,
                entryID=lease.entryID if lease else None,
                phaseID=phases.get(session_id),
            )
        )
    return Sessions(sessions=sessions)
