"""What every command needs: the event log, the read models it decides on, the settings."""

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from orchestrator.eventlog import EventLog, VersionConflict
from orchestrator.events import Question
from orchestrator.settings import Settings

T = TypeVar("T")
MAX_ATTEMPTS = 8


class ReadModels(Protocol):
    """The read side, as the commands see it (implemented by ``projections``)."""

    async def current(self, workspace_id: str) -> None:
        """Return once the read models reflect every event appended so far (bounded wait)."""
        ...

    async def config(self, workspace_id: str) -> tuple[dict[str, Any], int]: ...

    async def pending_question(
        self, workspace_id: str, question_id: str
    ) -> tuple[Question, int] | None: ...

    async def questions_due(self, workspace_id: str) -> list[str]: ...

    async def wait_for(self, workspace_id: str, seq: int) -> None:
        """Return once the read models reflect ``seq`` (or a bounded wait ran out)."""
        ...


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass(frozen=True)
class Orchestrator:
    eventlog: EventLog
    models: ReadModels
    settings: Settings
    locks: KeyedLocks = field(default_factory=KeyedLocks)

    async def decide(
        self, workspace_id: str, entity: str, attempt: Callable[[], Awaitable[T]]
    ) -> T:
        """Run a load-decide-append attempt on ``entity``; on a version conflict, let the read
        models catch up with the version that won and decide again.

        Attempts on one entity are serialized within this process, so conflicts only arise
        between replicas; those back off with jitter.
        """
        async with self.locks.hold(f"{workspace_id}/{entity}"):
            for remaining in reversed(range(MAX_ATTEMPTS)):
                try:
                    return await attempt()
                except VersionConflict as conflict:
                    if not remaining:
                        raise
                    await self.models.wait_for(workspace_id, conflict.current)
                    await asyncio.sleep(random.uniform(0, 0.005 * (MAX_ATTEMPTS - remaining)))
        raise AssertionError("unreachable")
