"""What every command needs: the event log, the read models it decides on, the settings."""

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from orchestrator.eventlog import EventLog, Idempotency, VersionConflict
from orchestrator.events import PlanDelta, Question, encode, new_event
from orchestrator.model import Plan
from orchestrator.plan import Decide
from orchestrator.settings import Settings

T = TypeVar("T")
MAX_ATTEMPTS = 200  # bounded by the deadline long before


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

    async def pending_questions_of(self, workspace_id: str, session_id: str) -> int:
        """How many questions the session has pending (unanswered, unexpired)."""
        ...

    async def plan(self, workspace_id: str) -> Plan:
        """The domain state as the plan read model holds it (a consistent snapshot)."""
        ...

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
        between replicas; those back off with jitter, and keep trying for as long as a read
        may wait (every conflict means another replica made progress, so this ends).
        """
        deadline = asyncio.get_running_loop().time() + self.settings.read_your_writes_timeout_s
        async with self.locks.hold(f"{workspace_id}/{entity}"):
            for tried in range(1, MAX_ATTEMPTS + 1):
                try:
                    return await attempt()
                except VersionConflict as conflict:
                    late = asyncio.get_running_loop().time() >= deadline
                    if tried == MAX_ATTEMPTS or late:
                        raise
                    await self.models.wait_for(workspace_id, conflict.current)
                    await asyncio.sleep(random.uniform(0, 0.002 * min(tried, 25)))
        raise AssertionError("unreachable")

    async def command(
        self, workspace_id: str, decide: Decide, idem: Idempotency | None = None
    ) -> bytes:
        """Load the plan, decide, and append the decision's events expecting the plan's
        version; on a conflict, decide again on the newer plan. Returns the decision's result
        as JSON (a retry with the same Idempotency-Key gets the first result back)."""
        earlier = await self.eventlog.recall(workspace_id, idem)
        if earlier is not None:
            return earlier.result

        async def attempt() -> bytes:
            plan = await self.models.plan(workspace_id)
            decision = decide(plan)
            result = encode(decision.result)
            if not decision.events:
                return result
            appended = await self.eventlog.append(
                workspace_id,
                [new_event(e, *entities(e)) for e in decision.events],
                expect={"plan": plan.version},
                idempotency=idem,
                result=result,
            )
            await self.models.wait_for(workspace_id, appended.last_seq)
            return appended.result

        return await self.decide(workspace_id, "plan", attempt)


def entities(payload: object) -> tuple[str, ...]:
    """The versioned entities an event changes: every domain event changes the plan."""
    if isinstance(payload, PlanDelta):
        return ("plan",)
    if isinstance(payload, Question):
        return (payload.id,)
    question_id = getattr(payload, "id", None)
    return (question_id,) if isinstance(question_id, str) and question_id.startswith("que_") else ()
