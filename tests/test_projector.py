"""The projector against a real Redis: catch-up, checkpoints, rebuilds (in process and through
the CLI) and concurrent projectors."""

import os
import random
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from redis.asyncio import Redis

from orchestrator.config import update_config
from orchestrator.context import Orchestrator
from orchestrator.eventlog import EventLog
from orchestrator.events import (
    ConfigUpdated,
    NewEvent,
    Payload,
    Question,
    QuestionAnswered,
    QuestionExpired,
    QuestionItem,
    QuestionOption,
    QuestionRejected,
    ToolCall,
    ToolRef,
    new_event,
)
from orchestrator.keys import WorkspaceKeys
from orchestrator.purge import PURGED, purge
from orchestrator.replies import as_str
from orchestrator.settings import Settings
from projections.config import read_config
from projections.log import LogQuery, iter_calls, query_log
from projections.questions import pending_questions
from projections.runner import Projector, all_projections
from projections.views import RedisReadModels
from tests.projector_worker import CountingProjection, worker_projections

ROOT = Path(__file__).resolve().parent.parent
PROJECTIONS = ["config", "log", "questions", "sessions", "plan", "imports"]
# Event-log bookkeeping and disposable caches: everything else under the prefix is a read model.
NOT_READ_MODELS = (":events", ":meta", ":versions", ":checkpoints", ":subscribers")
NOT_READ_MODEL_PARTS = (":idem:", ":cache:")

Snapshot = dict[str, tuple[str, Any]]


# Events


def call(n: int, rng: random.Random) -> ToolCall:
    return ToolCall(
        tool=rng.choice(["fs.read", "fs.write", "net.fetch", "shell"]),
        sessionID=rng.choice(["s1", "s2", "s3", "s4"]),
        callID=f"call_{n}",
        entryID=rng.choice([None, f"entry_{n % 7}"]),
        title=rng.choice([None, f"call number {n}"]),
        timestamp=1_700_000_000_000 + rng.randrange(0, 50) * 1000,  # many equal timestamps
        duration=rng.randrange(0, 500),
        status=rng.choice(["ok", "error", "intercepted"]),
        corrections=rng.choice([[], [{"n": n}]]),
        target=rng.choice([None, f"/repo/file{n % 11}"]),
        agentName=rng.choice(["build-agent", "research-agent"]),
        container_id=rng.choice([None, "ctr_1", "ctr_2"]),
        workspaceID="ws",
    )


def ask(qid: str, rng: random.Random) -> Question:
    options = [QuestionOption("yes"), QuestionOption("no", "say no")]
    return Question(
        id=qid,
        sessionID=rng.choice(["s1", "s2", "s5"]),
        questions=[QuestionItem("Proceed?", "Confirm", options)],
        tool=ToolRef("msg_1", f"call_{qid}"),
        expires_at=rng.choice([None, 1_900_000_000_000 + rng.randrange(1000)]),
    )


def history(n: int, seed: int = 1) -> list[NewEvent]:
    """A deterministic mix of tool calls, questions and their outcomes, config updates, and
    event types the projections do not know."""
    rng = random.Random(seed)
    events: list[NewEvent] = []
    pending: list[Question] = []
    config: dict[str, Any] = {}
    for i in range(n):
        roll = rng.random()
        if roll < 0.55:
            events.append(new_event(call(i, rng)))
        elif roll < 0.70:
            question = ask(f"que_{i}", rng)
            pending.append(question)
            events.append(new_event(question, question.id))
        elif roll < 0.85 and pending:
            q = pending.pop(rng.randrange(len(pending)))
            outcomes: list[Payload] = [
                QuestionAnswered(q.id, q.sessionID, [["yes"]]),
                QuestionRejected(q.id, q.sessionID, reason="not now"),
                QuestionExpired(q.id, q.sessionID, q.expires_at or 0),
            ]
            outcome = rng.choice(outcomes)
            events.append(new_event(outcome, q.id))
        elif roll < 0.95:
            patch = {f"k{rng.randrange(5)}": rng.choice([None, i, "v", {"deep": i}])}
            config = {k: v for k, v in {**config, **patch}.items() if v is not None}
            events.append(new_event(ConfigUpdated(patch=patch, config=config), "config"))
        else:
            events.append(NewEvent("todo.archived", b'{"id":"todo_%d"}' % i, (f"todo_{i}",)))
    return events


async def append_all(log: EventLog, workspace: str, events: list[NewEvent]) -> int:
    last = 0
    for start in range(0, len(events), 50):
        last = (await log.append(workspace, events[start : start + 50])).last_seq
    return last


# Snapshots


async def snapshot(client: Redis, workspace: str, *, relative: bool = True) -> Snapshot:
    """Every read-model key of the workspace and its contents, by type."""
    prefix = WorkspaceKeys(workspace).prefix
    found: Snapshot = {}
    async for raw in client.scan_iter(match=f"{prefix}:*", count=1000):
        key = as_str(raw)
        if key.endswith(NOT_READ_MODELS) or any(p in key for p in NOT_READ_MODEL_PARTS):
            continue
        kind = as_str(await client.type(key))
        value: Any
        if kind == "hash":
            value = sorted((await client.hgetall(key)).items())
        elif kind == "zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(await client.smembers(key))
        elif kind == "string":
            value = await client.get(key)
        elif kind == "list":
            value = await client.lrange(key, 0, -1)
        else:
            value = await client.xrange(key)
        if relative:
            found[key.removeprefix(prefix)] = (kind, unprefixed(value, prefix.encode()))
        else:
            found[key] = (kind, value)
    return dict(sorted(found.items()))


def unprefixed(value: Any, prefix: bytes) -> Any:
    """``value`` with the workspace's key prefix cut out of the key names it holds (the log's
    index registry), so that two workspaces' read models compare."""
    if isinstance(value, bytes):
        return value.removeprefix(prefix)
    if isinstance(value, list | tuple):
        return type(value)(unprefixed(v, prefix) for v in value)
    return value


# Catching up


@pytest.mark.anyio
async def test_catch_up_builds_the_read_models(client: Redis, workspace: str) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=60_000)
    projector = Projector(log)
    rng = random.Random(7)
    c1 = msgspec.structs.replace(call(1, rng), tool="fs.read", sessionID="s1", status="ok")
    c2 = msgspec.structs.replace(call(2, rng), tool="fs.write", sessionID="s2", status="ok")
    c3 = msgspec.structs.replace(call(3, rng), tool="fs.read", sessionID="s2", status="error")
    q1 = msgspec.structs.replace(ask("que_1", rng), sessionID="s3", expires_at=None)
    q2 = msgspec.structs.replace(ask("que_2", rng), sessionID="s4", expires_at=1_900_000_000_000)
    q3 = msgspec.structs.replace(ask("que_3", rng), sessionID="s1", expires_at=None)
    events = [
        new_event(ConfigUpdated(patch={"a": 1}, config={"a": 1}), "config"),  # 1
        new_event(c1),  # 2
        new_event(q1, "que_1"),  # 3
        new_event(c2),  # 4
        new_event(q2, "que_2"),  # 5
        new_event(q3, "que_3"),  # 6
        new_event(QuestionAnswered("que_1", "s3", [["yes"]]), "que_1"),  # 7
        new_event(ConfigUpdated(patch={"b": {"c": 2}}, config={"a": 1, "b": {"c": 2}})),  # 8
        new_event(c3),  # 9
        new_event(QuestionRejected("que_3", "s1"), "que_3"),  # 10
        NewEvent("todo.archived", b'{"id":"todo_1"}'),  # 11
    ]
    assert await append_all(log, workspace, events) == 11
    assert await projector.checkpoints(workspace) == dict.fromkeys(PROJECTIONS, 0)

    assert await projector.catch_up(workspace) == 11
    assert await projector.checkpoints(workspace) == dict.fromkeys(PROJECTIONS, 11)

    assert await read_config(client, workspace) == ({"a": 1, "b": {"c": 2}}, 8)
    pending = await pending_questions(client, workspace, now_ms=0)
    assert [(p.question, p.version) for p in pending] == [(q2, 5)]
    assert await pending_questions(client, workspace, now_ms=2_000_000_000_000) == []
    keys = WorkspaceKeys(workspace)
    assert await client.zrange(keys.questions_expiry, 0, -1, withscores=True) == [
        (b"que_2", 1_900_000_000_000.0)
    ]
    assert await client.smembers(keys.sessions) == {b"s1", b"s2", b"s3", b"s4"}

    calls = [c for batch in [b async for b in iter_calls(client, workspace)] for c in batch]
    assert sorted(msgspec.json.decode(c, type=ToolCall).callID for c in calls) == [
        "call_1",
        "call_2",
        "call_3",
    ]
    fs_read = await query_log(client, workspace, LogQuery(filters={"tool": "fs.read"}))
    assert fs_read.total == 2
    assert [msgspec.json.decode(i, type=ToolCall) for i in fs_read.items] == sorted(
        [c1, c3], key=lambda c: (c.timestamp, c.callID)
    )
    s2_ok = await query_log(
        client, workspace, LogQuery(filters={"sessionID": "s2", "status": "ok"})
    )
    assert [msgspec.json.decode(i, type=ToolCall) for i in s2_ok.items] == [c2]

    # Nothing new: a second catch-up changes nothing.
    before = await snapshot(client, workspace)
    assert await projector.catch_up(workspace) == 11
    assert await snapshot(client, workspace) == before

    # New events are applied from the checkpoint on.
    await log.append(workspace, [new_event(QuestionExpired("que_2", "s4", 1))])
    assert await projector.catch_up(workspace) == 12
    assert await pending_questions(client, workspace, now_ms=0) == []
    assert await client.exists(keys.questions_expiry) == 0


@pytest.mark.anyio
async def test_batch_size_does_not_change_the_result(
    client: Redis, workspace: str, redis_url: str
) -> None:
    other = f"{workspace}_b"
    log = EventLog(client, retention=0, idempotency_ttl_ms=60_000)
    events = history(400)
    assert await append_all(log, workspace, events) == 400
    assert await append_all(log, other, events) == 400
    assert await Projector(log, batch=1000).catch_up(workspace) == 400
    assert await Projector(log, batch=3).catch_up(other) == 400
    assert await snapshot(client, workspace) == await snapshot(client, other)


# Rebuilding


@pytest.mark.anyio
async def test_rebuild_all_and_each_gives_identical_read_models(
    client: Redis, workspace: str
) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=60_000)
    projector = Projector(log, batch=100)
    last = await append_all(log, workspace, history(600, seed=3))
    assert await projector.catch_up(workspace) == last
    built = await snapshot(client, workspace)
    # Every read model has something in it.
    assert {key.split(":")[1] for key in built} == {
        "config",
        "log",
        "questions",
        "sessions",
        "plan",
    }

    assert await projector.rebuild(workspace) == last
    assert await snapshot(client, workspace) == built
    assert await projector.checkpoints(workspace) == dict.fromkeys(PROJECTIONS, last)

    keys = WorkspaceKeys(workspace)
    # Per read model: keys to delete, and a key to leave a stray entry in.
    damage = {
        "config": ([keys.config], keys.config),
        "log": ([keys.log_all, keys.log_index("tool", "fs.read")], keys.log_calls),
        "questions": ([keys.questions_order], keys.questions),
        "sessions": ([], keys.sessions),
        "plan": ([], keys.plan),
        "imports": ([], keys.imports),
    }
    for name in PROJECTIONS:
        deleted, stray = damage[name]
        if deleted:
            await client.delete(*deleted)
        if stray == keys.sessions:
            await client.sadd(stray, "stray")
        else:
            await client.hset(stray, "stray", "left by nobody")
        assert await snapshot(client, workspace) != built
        assert await projector.rebuild(workspace, [name]) == last
        assert await snapshot(client, workspace) == built, name
    assert await projector.checkpoints(workspace) == dict.fromkeys(PROJECTIONS, last)

    with pytest.raises(ValueError, match="unknown projections: todo"):
        await projector.rebuild(workspace, ["todo", "log"])


@pytest.mark.anyio
async def test_rebuild_one_projection_leaves_the_others_alone(
    client: Redis, workspace: str
) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=60_000)
    counting = CountingProjection()
    projector = Projector(log, [*all_projections(), counting], batch=50)
    last = await append_all(log, workspace, history(300, seed=5))
    await projector.catch_up(workspace)
    built = await snapshot(client, workspace)
    for name in PROJECTIONS:
        assert await projector.rebuild(workspace, [name]) == last
        # The counter saw every event exactly once: the others were not re-fed.
        assert await snapshot(client, workspace) == built
    assert await projector.rebuild(workspace, ["test_count"]) == last
    assert await snapshot(client, workspace) == built
    count = await client.hgetall(counting.key(WorkspaceKeys(workspace)))
    assert count[b"events"] == str(last).encode()


def orchestrator(client: Redis, projector: Projector) -> Orchestrator:
    models = RedisReadModels(client, projector, wait_timeout_s=5.0)
    return Orchestrator(projector.eventlog, models, Settings())


@pytest.mark.anyio
async def test_rebuild_after_a_purge_keeps_the_config(client: Redis, workspace: str) -> None:
    """Purge keeps the config (and its version): a rebuild must not lose it, or every later
    config update conflicts with a version the read model no longer has."""
    log = EventLog(client, retention=0, idempotency_ttl_ms=60_000)
    projector = Projector(log)
    orch = orchestrator(client, projector)
    await append_all(log, workspace, history(50, seed=9))
    merged = await update_config(orch, workspace, {"x": 1}, None)
    assert merged["x"] == 1
    assert await purge(orch, workspace, None) == PURGED
    last = await append_all(log, workspace, [new_event(call(1, random.Random(1)))])
    assert await projector.catch_up(workspace) == last
    config, version = await read_config(client, workspace)
    assert config == merged
    assert [version] == await log.versions(workspace, "config")
    built = await snapshot(client, workspace)

    await projector.rebuild(workspace)
    assert await snapshot(client, workspace) == built
    assert await update_config(orch, workspace, {"y": 2}, None) == {**merged, "y": 2}


@pytest.mark.anyio
async def test_purge_keeps_a_config_update_not_yet_projected(client: Redis, workspace: str) -> None:
    """A config update appended (by another replica) but not yet projected here when the purge
    comes must survive the purge, like any config."""
    log = EventLog(client, retention=0, idempotency_ttl_ms=60_000)
    projector = Projector(log)
    orch = orchestrator(client, projector)
    configured = new_event(ConfigUpdated(patch={"x": 1}, config={"x": 1}), "config")
    await log.append(workspace, [configured], expect={"config": 0})
    assert await purge(orch, workspace, None) == PURGED
    await projector.catch_up(workspace)
    config, version = await read_config(client, workspace)
    assert config == {"x": 1}
    assert [version] == await log.versions(workspace, "config")


@pytest.mark.anyio
async def test_rebuild_while_another_projector_catches_up(
    redis_url: str, client: Redis, workspace: str
) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=60_000)
    reference = f"{workspace}_ref"
    events = history(1500, seed=11)
    last = await append_all(log, workspace, events)
    await append_all(log, reference, events)
    await Projector(log, worker_projections()).catch_up(reference)

    other = Redis.from_url(redis_url)
    try:
        rebuilder = Projector(log, worker_projections(), batch=40)
        runner = Projector(EventLog(other, 0, 60_000), worker_projections(), batch=9)
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.catch_up, workspace)
            for names in (None, ["log"], ["test_count", "questions"], None):
                await anyio.sleep(0.01)
                await rebuilder.rebuild(workspace, names)
        assert await runner.catch_up(workspace) == last
    finally:
        await other.aclose()
    assert await snapshot(client, workspace) == await snapshot(client, reference)
    assert set((await rebuilder.checkpoints(workspace)).values()) == {last}


@pytest.mark.anyio
async def test_rebuild_reloads_flushed_scripts(client: Redis, workspace: str) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=60_000)
    projector = Projector(log, batch=10)
    last = await append_all(log, workspace, history(100, seed=2))
    await client.script_flush()
    assert await projector.catch_up(workspace) == last
    built = await snapshot(client, workspace)
    await client.script_flush()
    assert await projector.rebuild(workspace) == last
    assert await snapshot(client, workspace) == built


# Several projectors


@pytest.mark.anyio
async def test_concurrent_projectors_leave_the_same_state_as_one(
    redis_url: str, client: Redis, workspace: str
) -> None:
    alone, shared = f"{workspace}_alone", f"{workspace}_shared"
    log = EventLog(client, retention=0, idempotency_ttl_ms=60_000)
    events = history(1200, seed=4)
    last = await append_all(log, alone, events)
    await append_all(log, shared, events)

    assert await Projector(log, worker_projections(), batch=13).catch_up(alone) == last

    clients = [Redis.from_url(redis_url) for _ in range(3)]
    try:
        projectors = [
            Projector(EventLog(c, 0, 60_000), worker_projections(), batch=b)
            for c, b in zip(clients, [13, 5, 31], strict=True)
        ]
        reached: list[int] = []

        async def run(projector: Projector) -> None:
            reached.append(await projector.catch_up(shared))

        async with anyio.create_task_group() as tg:
            for projector in projectors:
                tg.start_soon(run, projector)
    finally:
        for c in clients:
            await c.aclose()

    assert reached == [last] * 3
    assert await snapshot(client, shared) == await snapshot(client, alone)
    count = await client.hgetall(CountingProjection.key(WorkspaceKeys(shared)))
    assert count == {b"events": str(last).encode()} | {
        f"seq:{s}".encode(): b"1" for s in range(1, last + 1)
    }


# The CLI


async def run_cli(redis_url: str, *args: str) -> tuple[int, str]:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    done = await anyio.run_process(
        [sys.executable, "-m", "orchestrator", "rebuild", *args], cwd=ROOT, env=env, check=False
    )
    return done.returncode, (done.stdout + done.stderr).decode()


@pytest.mark.anyio
async def test_cli_rebuild_restores_a_deleted_read_model(
    redis_url: str, client: Redis, workspace: str
) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=60_000)
    last = await append_all(log, workspace, history(300, seed=6))
    await Projector(log).catch_up(workspace)
    built = await snapshot(client, workspace)
    keys = WorkspaceKeys(workspace)

    await client.delete(keys.questions, keys.questions_order, keys.questions_expiry)
    code, output = await run_cli(redis_url, workspace, "--projection", "questions")
    assert code == 0, output
    assert f"rebuilt {workspace} up to seq {last}" in output
    assert await snapshot(client, workspace) == built

    index_keys = [k async for k in client.scan_iter(match=f"{keys.prefix}:log:*")]
    await client.delete(*index_keys, keys.config, keys.sessions)
    assert await snapshot(client, workspace) != built
    code, output = await run_cli(redis_url, workspace)
    assert code == 0, output
    assert f"rebuilt {workspace} up to seq {last}" in output
    assert await snapshot(client, workspace) == built
    assert await Projector(log).checkpoints(workspace) == dict.fromkeys(PROJECTIONS, last)


@pytest.mark.anyio
async def test_cli_rebuild_refuses_unknown_projection(redis_url: str, workspace: str) -> None:
    code, output = await run_cli(redis_url, workspace, "--projection", "todo")
    assert code == 2
    assert "invalid choice: 'todo'" in output
