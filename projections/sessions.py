"""The set of agent sessions seen in the workspace: tool calls, questions, worker leases and
prompt targets. Per-session figures are read from the tool-call log's session index."""

from typing import Any

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
from orchestrator.replies import as_str
from projections.base import Command

RELEVANT = frozenset(
    cls.type for cls in (ToolCall, Question, LeaseGranted, PromptDispatched, OrchestrationPurged)
)


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

    def drop(self, keys: WorkspaceKeys) -> list[Command]:
        return [("DEL", keys.sessions)]


async def read_sessions(redis: Redis, workspace_id: str) -> list[dict[str, Any]]:
    """Every session, with its tool-call count and first/last call times (epoch ms)."""
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
        sessions.append(
            {
                "id": session_id,
                "tool_calls": int(count),
                "first_call_at": int(first[0][1]) if first else None,
                "last_call_at": int(last[0][1]) if last else None,
            }
        )
    return sessions
