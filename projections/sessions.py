"""The set of session ids seen in the workspace (tool calls and questions)."""

from orchestrator.events import OrchestrationPurged, Question, StoredEvent, ToolCall
from orchestrator.keys import WorkspaceKeys
from projections.base import Command


class SessionsProjection:
    name = "sessions"

    def apply(self, keys: WorkspaceKeys, event: StoredEvent) -> list[Command]:
        payload = event.decode()
        if isinstance(payload, ToolCall | Question):
            return [("SADD", keys.sessions, payload.sessionID)]
        if isinstance(payload, OrchestrationPurged):
            return self.drop(keys)
        return []

    def drop(self, keys: WorkspaceKeys) -> list[Command]:
        return [("DEL", keys.sessions)]
