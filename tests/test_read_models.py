"""Read-model queries on fakeredis: fast checks of how stored views are read back."""

from collections.abc import AsyncIterator

import msgspec
import pytest
from fakeredis import FakeAsyncRedis

from orchestrator.events import Question, QuestionItem, QuestionOption, ToolRef
from orchestrator.keys import WorkspaceKeys
from projections.config import read_config
from projections.log import iter_calls, member
from projections.questions import due_for_expiry, find_question, pending_questions

WS = "ws_fake"
KEYS = WorkspaceKeys(WS)


@pytest.fixture
async def redis() -> AsyncIterator[FakeAsyncRedis]:
    client = FakeAsyncRedis()
    yield client
    await client.aclose()


def question(qid: str, expires_at: int | None = None) -> bytes:
    item = QuestionItem("Go?", "Go", [QuestionOption("Yes")])
    q = Question(id=qid, sessionID="s", questions=[item], tool=ToolRef("m", "c"))
    if expires_at is not None:
        q = msgspec.structs.replace(q, expires_at=expires_at)
    return msgspec.json.encode(q)


@pytest.mark.anyio
async def test_config_reads_empty_then_the_stored_document(redis: FakeAsyncRedis) -> None:
    assert await read_config(redis, WS) == ({}, 0)
    await redis.hset(KEYS.config, mapping={"doc": b'{"a":{"b":1}}', "version": 7})
    assert await read_config(redis, WS) == ({"a": {"b": 1}}, 7)


@pytest.mark.anyio
async def test_pending_questions_oldest_first_without_the_expired(redis: FakeAsyncRedis) -> None:
    await redis.hset(
        KEYS.questions,
        mapping={
            "que_b": question("que_b"),
            "que_a": question("que_a"),
            "que_x": question("que_x", 50),
        },
    )
    await redis.zadd(KEYS.questions_order, {"que_b": 9, "que_a": 4, "que_x": 2})
    await redis.zadd(KEYS.questions_expiry, {"que_x": 50})

    pending = await pending_questions(redis, WS, now_ms=100)
    assert [(p.question.id, p.version) for p in pending] == [("que_a", 4), ("que_b", 9)]
    assert pending[0].raw == question("que_a")  # served as stored, not re-encoded

    found = await find_question(redis, WS, "que_x")  # past due, but not yet expired by an event
    assert found is not None
    assert not found.live(100)
    assert found.live(49)
    assert await find_question(redis, WS, "que_missing") is None
    assert await due_for_expiry(redis, WS, now_ms=100) == ["que_x"]
    assert await due_for_expiry(redis, WS, now_ms=49) == []


@pytest.mark.anyio
async def test_the_call_log_is_read_in_timestamp_order_in_batches(redis: FakeAsyncRedis) -> None:
    for seq, timestamp in [(1, 30), (2, 10), (3, 20), (4, 10)]:
        await redis.hset(KEYS.log_calls, member(seq), b'{"seq":%d}' % seq)
        await redis.zadd(KEYS.log_all, {member(seq): timestamp})

    batches = [batch async for batch in iter_calls(redis, WS, batch=3)]
    assert batches == [[b'{"seq":2}', b'{"seq":4}', b'{"seq":3}'], [b'{"seq":1}']]
