"""Folding a batch at a time: a projection's ``apply_batch`` and the runner's merging of
writes leave the same read model as folding one event at a time."""

import random
from collections.abc import Callable

import msgspec
import pytest
from redis.asyncio import Redis

from orchestrator import todo
from orchestrator.context import entities
from orchestrator.eventlog import EventLog
from orchestrator.events import NewEvent, OrchestrationPurged, StoredEvent, new_event
from orchestrator.keys import WorkspaceKeys
from orchestrator.model import PRIORITIES, Plan
from orchestrator.plan import evolve
from orchestrator.todo import PriorityInput
from projections.base import BatchProjection, Command
from projections.log import LogProjection
from projections.plan import PlanProjection
from projections.runner import _MAX_WORDS, Projector, _coalesce, _split, _words
from projections.sessions import SessionsProjection
from tests.test_projector import append_all, history, snapshot


class OneAtATime:
    """A projection without its ``apply_batch``: the runner folds it event by event."""

    def __init__(self, projection: BatchProjection) -> None:
        self.projection = projection
        self.name = projection.name

    def apply(self, keys: WorkspaceKeys, event: StoredEvent) -> list[Command]:
        return self.projection.apply(keys, event)

    def drop(self, keys: WorkspaceKeys) -> list[Command]:
        return self.projection.drop(keys)


def with_plan_events(events: list[NewEvent], seed: int) -> list[NewEvent]:
    """``events`` with TODO changes decided on the plan they build, spread among them."""
    rng = random.Random(seed)
    plan, out, seq = Plan(), [], 0
    for event in events:
        if rng.random() < 0.1:
            ids = list(plan.entries)
            if ids and rng.random() < 0.6:
                given = PriorityInput(priority=rng.choice(PRIORITIES))
                decision = todo.decide_priority(plan, rng.choice(ids), given, now=seq)
            else:
                given_entry = todo.EntryInput(content=f"entry {seq}")
                decision = todo.decide_create(plan, [given_entry], now=seq)
            for payload in decision.events:
                seq += 1
                plan = evolve(plan, payload, seq)
                out.append(new_event(payload, *entities(payload)))
        seq += 1
        out.append(event)
    return out


@pytest.mark.anyio
@pytest.mark.parametrize("batch", [1, 97, 1000])
@pytest.mark.parametrize("make", [LogProjection, SessionsProjection, PlanProjection])
async def test_a_batch_at_a_time_builds_the_same_read_model(
    client: Redis, workspace: str, batch: int, make: Callable[[], BatchProjection]
) -> None:
    events = history(400, seed=batch)
    events.insert(150, new_event(OrchestrationPurged(purged=["tool_logs"])))
    events = with_plan_events(events, seed=batch)
    log = EventLog(client, retention=0, idempotency_ttl_ms=60_000)
    reference = f"{workspace}_ref"
    last = await append_all(log, workspace, events)
    assert await append_all(log, reference, events) == last

    assert await Projector(log, [make()], batch=batch).catch_up(workspace) == last
    assert await Projector(log, [OneAtATime(make())], batch=batch).catch_up(reference) == last
    assert await snapshot(client, workspace) == await snapshot(client, reference)


def test_merging_adds_each_set_member_once_and_keeps_barriers() -> None:
    commands: list[Command] = [
        ("SADD", "s", "a", "b"),
        ("ZADD", "z", 1, "m1"),
        ("SADD", "s", "b", "c"),
        ("ZADD", "z", 2, "m2"),
        ("DEL", "s"),
        ("SADD", "s", "a"),
    ]
    assert _coalesce(commands) == [
        ["SADD", "s", "a", "b", "c"],
        ["ZADD", "z", 1, "m1", 2, "m2"],
        ["DEL", "s"],
        ["SADD", "s", "a"],
    ]


def test_long_commands_are_cut_between_pairs() -> None:
    pairs = [word for n in range(_MAX_WORDS) for word in (n, f"m{n}")]
    for cut in (_split([("ZADD", "z", *pairs)]), _coalesce([("ZADD", "z", *pairs)])):
        assert [len(c) for c in cut] == [_MAX_WORDS + 2, _MAX_WORDS + 2]
        assert all(c[:2] == ["ZADD", "z"] for c in cut)
        assert [w for c in cut for w in c[2:]] == pairs
    assert _split([("DEL", *[f"k{n}" for n in range(_MAX_WORDS + 5)])])[0][0] == "DEL"


def test_long_call_id_commands_are_cut_between_triples() -> None:
    header = ("CALLIDS", "ids", "all", "registry", "prefix:")
    triples = [w for n in range(_MAX_WORDS) for w in (f"call_{n % 7}", f"{n:016d}", n)]
    for cut in (_split([(*header, *triples)]), _coalesce([(*header, *triples)])):
        assert all(tuple(c[:5]) == header and (len(c) - 5) % 3 == 0 for c in cut)
        assert all(len(c) - 5 <= _MAX_WORDS for c in cut)
        assert [w for c in cut for w in c[5:]] == triples


def test_bytes_travel_as_msgpack_strings() -> None:
    [command] = [_words(["HSET", "h", "f", b"\x00\xff"])]
    assert msgspec.msgpack.encode(command) == msgspec.msgpack.encode(
        ["HSET", "h", "f", msgspec.Raw(b"\xdb\x00\x00\x00\x02\x00\xff")]
    )


def test_increments_of_one_field_in_a_row_are_summed() -> None:
    commands: list[Command] = [
        ("HINCRBY", "plan", "tool_calls", 1),
        ("HINCRBY", "plan", "tool_calls", 2),
        ("HINCRBY", "plan", "other", 1),
        ("HSET", "plan", "tool_calls", 0),
        ("HINCRBY", "plan", "tool_calls", 1),
        ("HINCRBY", "plan", "tool_calls", 1),
    ]
    assert _coalesce(commands) == [
        ["HINCRBY", "plan", "tool_calls", 3],
        ["HINCRBY", "plan", "other", 1],
        ["HSET", "plan", "tool_calls", 0],
        ["HINCRBY", "plan", "tool_calls", 2],
    ]


class FailingAt:
    """Counts every event it applies, once; raises while folding event ``at``."""

    name = "failing"

    def __init__(self, at: int | None) -> None:
        self.at = at

    @staticmethod
    def key(keys: WorkspaceKeys) -> str:
        return f"{keys.prefix}:test:failing"

    def apply(self, keys: WorkspaceKeys, event: StoredEvent) -> list[Command]:
        if event.seq == self.at:
            raise RuntimeError("projection failed")
        return [("HINCRBY", self.key(keys), f"seq:{event.seq}", 1)]

    def drop(self, keys: WorkspaceKeys) -> list[Command]:
        return [("DEL", self.key(keys))]


@pytest.mark.anyio
async def test_a_failure_mid_pipeline_leaves_a_checkpoint_to_resume_from(
    client: Redis, workspace: str
) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=60_000)
    last = await append_all(log, workspace, history(50))
    with pytest.raises(RuntimeError, match="projection failed"):
        await Projector(log, [FailingAt(25)], batch=10).catch_up(workspace)
    # The batch before the failing one was in flight: applied whole, or not at all.
    keys = WorkspaceKeys(workspace)
    assert int(await client.hget(keys.checkpoints, FailingAt.name) or 0) in (10, 20)

    assert await Projector(log, [FailingAt(None)], batch=10).catch_up(workspace) == last
    counts = await client.hgetall(FailingAt.key(keys))
    assert counts == {b"seq:%d" % seq: b"1" for seq in range(1, last + 1)}
