"""The pending-questions read model: unanswered questions, oldest first."""

from typing import cast

import msgspec
from redis.asyncio import Redis

from orchestrator.events import (
    OrchestrationPurged,
    Question,
    QuestionAnswered,
    QuestionExpired,
    QuestionRejected,
    StoredEvent,
)
from orchestrator.keys import WorkspaceKeys
from orchestrator.replies import as_bytes, as_str
from projections.base import Command

_decode_question = msgspec.json.Decoder(Question).decode


RELEVANT = frozenset(
    cls.type
    for cls in (Question, QuestionAnswered, QuestionRejected, QuestionExpired, OrchestrationPurged)
)


class QuestionsProjection:
    name = "questions"

    def apply(self, keys: WorkspaceKeys, event: StoredEvent) -> list[Command]:
        if event.type not in RELEVANT:
            return []  # decided on the type alone: most events are tool calls
        payload = event.decode()
        match payload:
            case Question(id=qid, expires_at=expires_at):
                writes: list[Command] = [
                    ("HSET", keys.questions, qid, bytes(event.payload)),
                    ("ZADD", keys.questions_order, event.seq, qid),
                ]
                if expires_at is not None:
                    writes.append(("ZADD", keys.questions_expiry, expires_at, qid))
                return writes
            case QuestionAnswered(id=qid) | QuestionRejected(id=qid) | QuestionExpired(id=qid):
                return [
                    ("HDEL", keys.questions, qid),
                    ("ZREM", keys.questions_order, qid),
                    ("ZREM", keys.questions_expiry, qid),
                ]
            case OrchestrationPurged():
                return self.drop(keys)
            case _:
                return []

    def drop(self, keys: WorkspaceKeys) -> list[Command]:
        return [("DEL", keys.questions, keys.questions_order, keys.questions_expiry)]


class PendingQuestion(msgspec.Struct, frozen=True):
    question: Question
    raw: bytes  # the Question JSON as stored, served without re-encoding
    version: int  # seq of the event that asked it

    def live(self, now_ms: int) -> bool:
        return self.question.expires_at is None or self.question.expires_at > now_ms


async def pending_questions(redis: Redis, workspace_id: str, now_ms: int) -> list[PendingQuestion]:
    """Every unanswered, unexpired question, oldest first."""
    keys = WorkspaceKeys(workspace_id)
    order = cast(
        list[tuple[bytes, float]], await redis.zrange(keys.questions_order, 0, -1, withscores=True)
    )
    if not order:
        return []
    ids = [as_bytes(qid) for qid, _ in order]
    raws = await redis.hmget(keys.questions, ids)
    found = [
        PendingQuestion(_decode_question(raw), as_bytes(raw), int(seq))
        for (_, seq), raw in zip(order, raws, strict=True)
        if raw is not None
    ]
    return [p for p in found if p.live(now_ms)]


async def find_question(
    redis: Redis, workspace_id: str, question_id: str
) -> PendingQuestion | None:
    """A question not yet answered, rejected or expired by an event (it may be past due)."""
    keys = WorkspaceKeys(workspace_id)
    pipe = redis.pipeline(transaction=False)
    pipe.hget(keys.questions, question_id)
    pipe.zscore(keys.questions_order, question_id)
    raw, seq = await pipe.execute()
    if raw is None or seq is None:
        return None
    return PendingQuestion(_decode_question(raw), as_bytes(raw), int(seq))


async def due_for_expiry(redis: Redis, workspace_id: str, now_ms: int) -> list[str]:
    keys = WorkspaceKeys(workspace_id)
    due = await redis.zrangebyscore(keys.questions_expiry, "-inf", now_ms)
    return [as_str(qid) for qid in due]
