"""The read models: as the commands see them (``orchestrator.context.ReadModels``), and as
the API reads them. Every read first lets the projections reach the log's head as of the
read, so a client reads its own writes (and everyone's before them), from any replica."""

from typing import Any

import structlog
from redis.asyncio import Redis

from orchestrator.clock import now_ms
from orchestrator.events import Question
from orchestrator.model import Plan
from projections.config import read_config
from projections.log import LogPage, LogQuery, query_log
from projections.plan import read_plan
from projections.questions import (
    PendingQuestion,
    due_for_expiry,
    find_question,
    pending_questions,
)
from projections.runner import Projector

log = structlog.get_logger(__name__)


class RedisReadModels:
    def __init__(self, redis: Redis, projector: Projector, wait_timeout_s: float) -> None:
        self.redis = redis
        self.projector = projector
        self.wait_timeout_s = wait_timeout_s

    async def current(self, workspace_id: str) -> None:
        """Wait (bounded) until the read models reflect every event appended so far."""
        await self.wait_for(workspace_id, await self.projector.eventlog.last_seq(workspace_id))

    async def config(self, workspace_id: str) -> tuple[dict[str, Any], int]:
        return await read_config(self.redis, workspace_id)

    async def log(self, workspace_id: str, query: LogQuery) -> LogPage:
        await self.current(workspace_id)
        return await query_log(self.redis, workspace_id, query)

    async def questions(self, workspace_id: str) -> list[PendingQuestion]:
        await self.current(workspace_id)
        return await pending_questions(self.redis, workspace_id, now_ms())

    async def question(self, workspace_id: str, question_id: str) -> PendingQuestion | None:
        """The question if pending and not past due."""
        await self.current(workspace_id)
        found = await find_question(self.redis, workspace_id, question_id)
        return found if found is not None and found.live(now_ms()) else None

    async def pending_question(
        self, workspace_id: str, question_id: str
    ) -> tuple[Question, int] | None:
        found = await find_question(self.redis, workspace_id, question_id)
        return None if found is None else (found.question, found.version)

    async def pending_questions_of(self, workspace_id: str, session_id: str) -> int:
        pending = await pending_questions(self.redis, workspace_id, now_ms())
        return sum(1 for p in pending if p.question.sessionID == session_id)

    async def questions_due(self, workspace_id: str) -> list[str]:
        return await due_for_expiry(self.redis, workspace_id, now_ms())

    async def plan(self, workspace_id: str) -> Plan:
        return await read_plan(self.redis, workspace_id)

    async def current_plan(self, workspace_id: str) -> Plan:
        """The plan as of every event appended so far (for reads)."""
        await self.current(workspace_id)
        return await read_plan(self.redis, workspace_id)

    async def wait_for(self, workspace_id: str, seq: int) -> None:
        if not await self.projector.wait_for(workspace_id, seq, self.wait_timeout_s):
            # The event is durable in the log; only the read model is late.
            log.warning("projection.late", workspace=workspace_id, seq=seq)
