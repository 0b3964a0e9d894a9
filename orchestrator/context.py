"""What every command needs: the event log, the read models it decides on, the settings."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from orchestrator.eventlog import EventLog, VersionConflict
from orchestrator.events import Question
from orchestrator.settings import Settings

T = TypeVar("T")
MAX_ATTEMPTS = 5


class ReadModels(Protocol):
    """The read side, as the commands see it (implemented by ``projections``)."""

    async def config(self, workspace_id: str) -> tuple[dict[str, Any], int]: ...

    async def pending_question(
        self, workspace_id: str, question_id: str
    ) -> tuple[Question, int] | None: ...

    async def questions_due(self, workspace_id: str) -> list[str]: ...

    async def wait_for(self, workspace_id: str, seq: int) -> None:
        """Return once the read models reflect ``seq`` (or a bounded wait ran out)."""
        ...


@dataclass(frozen=True)
class Orchestrator:
    eventlog: EventLog
    models: ReadModels
    settings: Settings

    async def decide(self, workspace_id: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run a load-decide-append attempt; on a version conflict, let the read models catch
        up with the version that won and decide again."""
        for remaining in reversed(range(MAX_ATTEMPTS)):
            try:
                return await attempt()
            except VersionConflict as conflict:
                if not remaining:
                    raise
                await self.models.wait_for(workspace_id, conflict.current)
        raise AssertionError("unreachable")
