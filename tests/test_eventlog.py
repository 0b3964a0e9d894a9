"""The event log against a real Redis: seq allocation, group commit, idempotency, expected
versions, purge, retention, script reloading and error mapping."""

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from redis.asyncio import Redis

from orchestrator import scripts
from orchestrator.errors import Unavailable, ValidationFailed
from orchestrator.eventlog import Appended, EventLog, Idempotency, VersionConflict
from orchestrator.events import NewEvent
from orchestrator.keys import WorkspaceKeys

DAY_MS = 24 * 3600 * 1000


def event(n: int, *entities: str, kind: str = "test.event") -> NewEvent:
    return NewEvent(type=kind, payload=json.dumps({"n": n}).encode(), entities=entities)


@asynccontextmanager
async def batching(log: EventLog, batched: bool) -> AsyncIterator[None]:
    """Run the body with the group-commit batcher running (or not)."""
    if not batched:
        yield
        return
    async with anyio.create_task_group() as tg:
        tg.start_soon(log.run_batcher)
        await anyio.lowlevel.checkpoint()  # the batcher's first step runs
        assert log._batching
        yield
        tg.cancel_scope.cancel()


async def stream(client: Redis, workspace: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    entries: Any = await client.xrange(WorkspaceKeys(workspace).events)
    return [(bytes(i), dict(f)) for i, f in entries]


async def append_many(log: EventLog, workspace: str, tasks: int, per_task: int) -> list[int]:
    """``tasks`` concurrent appenders; checks each got back the seq its own event landed at."""
    got: dict[tuple[int, int], int] = {}

    async def appender(t: int) -> None:
        for i in range(per_task):
            appended = await log.append(workspace, [event(t * 1000 + i)])
            assert appended.count == 1
            assert not appended.duplicate
            got[(t, i)] = appended.first_seq

    async with anyio.create_task_group() as tg:
        for t in range(tasks):
            tg.start_soon(appender, t)
    assert len(got) == tasks * per_task
    return [got[(t, i)] for t in range(tasks) for i in range(per_task)]


async def check_log_matches(
    client: Redis, workspace: str, seqs_by_n: dict[int, int], started_ms: int
) -> None:
    entries = await stream(client, workspace)
    assert [entry_id for entry_id, _ in entries] == [
        f"{s}-0".encode() for s in range(1, len(seqs_by_n) + 1)
    ]
    for entry_id, fields in entries:
        assert set(fields) == {b"type", b"payload", b"ts"}
        assert fields[b"type"] == b"test.event"
        n = json.loads(fields[b"payload"])["n"]
        assert seqs_by_n[n] == int(entry_id.split(b"-")[0]), "seq returned to the wrong caller"
        assert started_ms - 1000 <= int(fields[b"ts"]) <= int(time.time() * 1000) + 1000


@pytest.mark.anyio
@pytest.mark.parametrize("batched", [True, False], ids=["group-commit", "direct"])
async def test_seq_is_gap_free_under_concurrent_appends(
    client: Redis, workspace: str, batched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    round_trips: list[int] = []
    run_all = scripts.run_all

    async def counting_run_all(redis: Redis, calls: list[scripts.Call]) -> list[Any]:
        # The appends of one round trip: append.lua takes their number first.
        assert all(script is scripts.APPEND for script, _, _ in calls)
        assert len(calls) == 1  # one workspace: one script call
        round_trips.append(sum(args[0] for _, _, args in calls))
        return await run_all(redis, calls)

    monkeypatch.setattr(scripts, "run_all", counting_run_all)
    log = EventLog(client, retention=0, idempotency_ttl_ms=DAY_MS)
    started_ms = int(time.time() * 1000)
    async with batching(log, batched):
        seqs = await append_many(log, workspace, tasks=50, per_task=20)

    assert sorted(seqs) == list(range(1, 1001))
    # Each appender's own seqs are strictly increasing (it waited for each before the next).
    for t in range(50):
        mine = seqs[t * 20 : (t + 1) * 20]
        assert mine == sorted(mine)
    seqs_by_n = {t * 1000 + i: seqs[t * 20 + i] for t in range(50) for i in range(20)}
    await check_log_matches(client, workspace, seqs_by_n, started_ms)
    assert await log.last_seq(workspace) == 1000
    assert await log.bounds(workspace) == (1, 1000)
    assert sum(round_trips) == 1000
    if batched:
        # Group commit: concurrent appends shared round trips.
        assert len(round_trips) < 500
        assert max(round_trips) > 1
    else:
        assert set(round_trips) == {1}


@pytest.mark.anyio
async def test_entries_are_readable_and_read_returns_them_in_order(
    client: Redis, workspace: str
) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=DAY_MS)
    appended = await log.append(workspace, [event(1), event(2), event(3, kind="other.kind")])
    assert (appended.first_seq, appended.count, appended.seqs) == (1, 3, [1, 2, 3])
    assert appended.last_seq == 3
    entries = await stream(client, workspace)
    assert [(i, f[b"type"], json.loads(f[b"payload"])) for i, f in entries] == [
        (b"1-0", b"test.event", {"n": 1}),
        (b"2-0", b"test.event", {"n": 2}),
        (b"3-0", b"other.kind", {"n": 3}),
    ]
    # One atomic step: one ts for the whole append.
    assert len({f[b"ts"] for _, f in entries}) == 1
    read = await log.read(workspace, 1, 10)
    assert [(e.seq, e.type, json.loads(bytes(e.payload))) for e in read] == [
        (2, "test.event", {"n": 2}),
        (3, "other.kind", {"n": 3}),
    ]
    assert [e.seq for e in await log.read(workspace, 0, 2)] == [1, 2]
    assert await log.read(workspace, 3, 10) == []


@pytest.mark.anyio
async def test_new_workspace_bounds(client: Redis, workspace: str) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=DAY_MS)
    assert await log.last_seq(workspace) == 0
    assert await log.bounds(workspace) == (1, 0)
    assert await log.read(workspace, 0, 10) == []


# Idempotency


@pytest.mark.anyio
@pytest.mark.parametrize("batched", [True, False], ids=["group-commit", "direct"])
async def test_idempotent_retry_returns_the_first_append(
    client: Redis, workspace: str, batched: bool
) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=DAY_MS)
    idem = Idempotency("tool.calls", "key-1", "fp-A")
    async with batching(log, batched):
        await log.append(workspace, [event(0)])
        first = await log.append(workspace, [event(1), event(2)], idempotency=idem, result=b"R1")
        assert first == Appended(first_seq=2, count=2, result=b"R1", duplicate=False)

        again = await log.append(workspace, [event(9)], idempotency=idem, result=b"other")
        assert again == Appended(first_seq=2, count=2, result=b"R1", duplicate=True)
        assert await log.last_seq(workspace) == 3
        assert len(await stream(client, workspace)) == 3

        with pytest.raises(ValidationFailed) as reused:
            await log.append(
                workspace, [event(9)], idempotency=Idempotency("tool.calls", "key-1", "fp-B")
            )
        assert reused.value.code == "IDEMPOTENCY_KEY_REUSED"
        assert await log.last_seq(workspace) == 3

        # The same key for another operation is another record.
        other_op = await log.append(
            workspace, [event(4)], idempotency=Idempotency("config", "key-1", "fp-B")
        )
        assert (other_op.first_seq, other_op.duplicate) == (4, False)

        # A retry is recognised before versions are checked: the first attempt moved the
        # version it expected, yet the retry gets the first result, not a conflict.
        guarded = Idempotency("answer", "key-3", "fp-C")
        created = await log.append(workspace, [event(5, "q")], expect={"q": 0}, idempotency=guarded)
        retried = await log.append(workspace, [event(5, "q")], expect={"q": 0}, idempotency=guarded)
        assert (retried.first_seq, retried.duplicate) == (created.first_seq, True)
        assert await log.last_seq(workspace) == 5

    assert await log.recall(workspace, idem) == again
    assert await log.recall(workspace, Idempotency("tool.calls", "key-2", "fp-A")) is None
    assert await log.recall(workspace, None) is None
    with pytest.raises(ValidationFailed) as mismatch:
        await log.recall(workspace, Idempotency("tool.calls", "key-1", "fp-B"))
    assert mismatch.value.code == "IDEMPOTENCY_KEY_REUSED"

    # The record expires with the configured TTL.
    ttl = await client.pttl(WorkspaceKeys(workspace).idempotency("tool.calls", "key-1"))
    assert 0 < ttl <= DAY_MS


@pytest.mark.anyio
async def test_concurrent_requests_with_one_idempotency_key_append_once(
    client: Redis, workspace: str
) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=DAY_MS)
    idem = Idempotency("op", "k", "fp")
    results: list[Appended] = []

    async def attempt(n: int) -> None:
        results.append(await log.append(workspace, [event(n)], idempotency=idem, result=b"r"))

    async with batching(log, True), anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(attempt, n)
    assert len(results) == 20
    assert sum(not a.duplicate for a in results) == 1
    assert {(a.first_seq, a.count, a.result) for a in results} == {(1, 1, b"r")}
    assert await log.last_seq(workspace) == 1


# Expected versions


@pytest.mark.anyio
@pytest.mark.parametrize("batched", [True, False], ids=["group-commit", "direct"])
async def test_expected_versions(client: Redis, workspace: str, batched: bool) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=DAY_MS)
    async with batching(log, batched):
        created = await log.append(workspace, [event(1, "x")], expect={"x": 0})
        assert created.first_seq == 1
        assert await log.versions(workspace, "x", "y") == [1, 0]

        with pytest.raises(VersionConflict) as stale:
            await log.append(workspace, [event(2, "x")], expect={"x": 0})
        assert (stale.value.entity, stale.value.current) == ("x", 1)
        assert stale.value.code == "VERSION_CONFLICT"
        assert stale.value.details == {"entity": "x", "current_version": 1}
        assert await log.last_seq(workspace) == 1
        assert len(await stream(client, workspace)) == 1

        # One stale entity among several fails the whole append.
        with pytest.raises(VersionConflict) as one_stale:
            await log.append(workspace, [event(3, "x", "y")], expect={"y": 0, "x": 7})
        assert (one_stale.value.entity, one_stale.value.current) == ("x", 1)
        assert await log.last_seq(workspace) == 1

        moved = await log.append(workspace, [event(4, "x", "y")], expect={"x": 1, "y": 0})
        assert moved.first_seq == 2
        assert await log.versions(workspace, "x", "y") == [2, 2]
        # An event that names no entity leaves versions alone.
        await log.append(workspace, [event(5)], expect={"x": 2})
        assert await log.versions(workspace, "x", "y") == [2, 2]


@pytest.mark.anyio
@pytest.mark.parametrize("batched", [True, False], ids=["group-commit", "direct"])
async def test_racing_appends_with_one_expected_version_one_wins(
    client: Redis, workspace: str, batched: bool
) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=DAY_MS)
    await log.append(workspace, [event(0, "entity")])
    wins: list[Appended] = []
    conflicts: list[VersionConflict] = []

    async def contender(n: int) -> None:
        try:
            wins.append(await log.append(workspace, [event(n, "entity")], expect={"entity": 1}))
        except VersionConflict as conflict:
            conflicts.append(conflict)

    async with batching(log, batched), anyio.create_task_group() as tg:
        for n in range(1, 21):
            tg.start_soon(contender, n)

    assert len(wins) == 1
    assert wins[0].first_seq == 2
    assert len(conflicts) == 19
    assert {(c.entity, c.current) for c in conflicts} == {("entity", 2)}
    assert await log.last_seq(workspace) == 2
    assert len(await stream(client, workspace)) == 2
    assert await log.versions(workspace, "entity") == [2]


# Purge


@pytest.mark.anyio
async def test_purge_drops_the_stream_and_seq_goes_on(client: Redis, workspace: str) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=DAY_MS)
    keys = WorkspaceKeys(workspace)
    await log.append(workspace, [event(1, "config"), event(2, "que_1"), event(3, "que_2")])
    await log.append(workspace, [event(4, "todo_1")])
    assert await log.versions(workspace, "config", "que_1", "que_2", "todo_1") == [1, 2, 3, 4]

    purged = await log.append(workspace, [event(5, kind="orchestration.purged")], purge=True)
    assert purged.first_seq == 5
    entries = await stream(client, workspace)
    assert [(i, f[b"type"]) for i, f in entries] == [(b"5-0", b"orchestration.purged")]
    assert await log.bounds(workspace) == (5, 5)
    assert await log.last_seq(workspace) == 5
    assert await client.hgetall(keys.versions) == {b"config": b"1"}
    # Entities are new again: expecting version 0 works.
    after = await log.append(workspace, [event(6, "que_1")], expect={"que_1": 0, "config": 1})
    assert after.first_seq == 6
    assert await log.bounds(workspace) == (5, 6)
    assert [e.seq for e in await log.read(workspace, 0, 10)] == [5, 6]

    # The config version survives every purge.
    await log.append(workspace, [event(7)], purge=True)
    assert await client.hgetall(keys.versions) == {b"config": b"1"}
    assert await log.bounds(workspace) == (7, 7)


@pytest.mark.anyio
async def test_purge_without_config_version_leaves_versions_empty(
    client: Redis, workspace: str
) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=DAY_MS)
    await log.append(workspace, [event(1, "que_1")])
    purged = await log.append(workspace, [event(2, "purge-marker")], purge=True)
    assert purged.first_seq == 2
    assert await client.hgetall(WorkspaceKeys(workspace).versions) == {b"purge-marker": b"2"}


# Retention


@pytest.mark.anyio
async def test_retention_trims_old_entries(client: Redis, workspace: str) -> None:
    log = EventLog(client, retention=10, idempotency_ttl_ms=DAY_MS)

    async def appender(t: int) -> None:
        for i in range(100):
            await log.append(workspace, [event(t * 100 + i)])

    async with batching(log, True), anyio.create_task_group() as tg:
        for t in range(10):
            tg.start_soon(appender, t)

    length = await client.xlen(WorkspaceKeys(workspace).events)
    assert 10 <= length <= 300  # approximate trim: whole stream nodes at a time
    first, last = await log.bounds(workspace)
    assert last == 1000
    assert first > 1
    assert first == last - length + 1  # the newest entries, contiguous
    retained = await log.read(workspace, 0, 2000)
    assert [e.seq for e in retained] == list(range(first, 1001))


# Lost scripts


@pytest.mark.anyio
@pytest.mark.parametrize("batched", [True, False], ids=["group-commit", "direct"])
async def test_append_survives_script_flush(client: Redis, workspace: str, batched: bool) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=DAY_MS)
    async with batching(log, batched):
        await log.append(workspace, [event(1)])
        await client.script_flush()
        assert await client.script_exists(scripts.APPEND.sha) == [False]
        seqs = await append_many(log, workspace, tasks=5, per_task=2)
        assert sorted(seqs) == list(range(2, 12))
        await client.script_flush()
        again = await log.append(workspace, [event(99, "x")], expect={"x": 0})
        assert again.first_seq == 12
    assert await log.last_seq(workspace) == 12
    assert len(await stream(client, workspace)) == 12


# Redis unreachable


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.anyio
@pytest.mark.parametrize("batched", [True, False], ids=["group-commit", "direct"])
async def test_append_to_unreachable_redis_is_unavailable(batched: bool) -> None:
    r = Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0")
    try:
        log = EventLog(r, retention=0, idempotency_ttl_ms=DAY_MS)
        async with batching(log, batched):
            with anyio.fail_after(5), pytest.raises(Unavailable) as failed:
                await log.append("ws_down", [event(1)])
            assert failed.value.code == "UNAVAILABLE"
    finally:
        await r.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["recall", "read", "last_seq", "bounds", "versions"])
async def test_reads_from_unreachable_redis_are_unavailable(method: str) -> None:
    r = Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0")
    try:
        log = EventLog(r, retention=0, idempotency_ttl_ms=DAY_MS)
        calls: dict[str, Any] = {
            "recall": lambda: log.recall("ws_down", Idempotency("op", "k", "fp")),
            "read": lambda: log.read("ws_down", 0, 10),
            "last_seq": lambda: log.last_seq("ws_down"),
            "bounds": lambda: log.bounds("ws_down"),
            "versions": lambda: log.versions("ws_down", "x"),
        }
        with anyio.fail_after(5), pytest.raises(Unavailable):
            await calls[method]()
    finally:
        await r.aclose()


@pytest.mark.anyio
async def test_appends_go_direct_once_the_batcher_stops(client: Redis, workspace: str) -> None:
    log = EventLog(client, retention=0, idempotency_ttl_ms=DAY_MS)
    async with batching(log, True):
        await log.append(workspace, [event(1)])
    assert not log._batching
    # Without a batcher, appends take the direct path again.
    assert (await log.append(workspace, [event(2)])).first_seq == 2


@pytest.mark.anyio
async def test_appends_pending_when_batcher_is_cancelled_do_not_hang(
    client: Redis, redis_url: str, workspace: str
) -> None:
    """A request waits for its event to reach Redis; if the batcher is cancelled while the
    pipeline carrying it is in flight, or while it is still queued, the request must still
    get an answer: its seq, or a retryable error."""
    log = EventLog(client, retention=0, idempotency_ttl_ms=DAY_MS)
    await log.append(workspace, [event(0)])  # scripts loaded
    pauser = Redis.from_url(redis_url)
    outcomes: dict[str, object] = {}
    answered = {"in flight": anyio.Event(), "queued": anyio.Event()}
    try:
        async with anyio.create_task_group() as outer:
            batcher = anyio.CancelScope()

            async def run_batcher() -> None:
                with batcher:
                    await log.run_batcher()

            async def request(name: str, n: int) -> None:
                try:
                    outcomes[name] = await log.append(workspace, [event(n)])
                except (Exception, asyncio.CancelledError) as exc:
                    outcomes[name] = exc
                answered[name].set()

            outer.start_soon(run_batcher)
            await anyio.lowlevel.checkpoint()
            assert log._batching
            # Hold every write in Redis so that the pipeline stays in flight.
            await pauser.client_pause(400, all=False)
            outer.start_soon(request, "in flight", 1)
            await anyio.sleep(0.1)
            assert log._pending == []  # taken by the batcher: in flight
            outer.start_soon(request, "queued", 2)
            await anyio.sleep(0.05)
            assert len(log._pending) == 1  # waits for the next round trip
            batcher.cancel()
            with anyio.fail_after(3):
                for event_ in answered.values():
                    await event_.wait()
    finally:
        await pauser.client_unpause()
        await pauser.aclose()
    for name, outcome in outcomes.items():
        # The answer is the truth: either the event is in the log, or a retryable failure.
        assert isinstance(outcome, Appended | Unavailable), (name, outcome)
        if isinstance(outcome, Appended):
            entries = await log.read(workspace, outcome.first_seq - 1, 1)
            assert json.loads(bytes(entries[0].payload))["n"] == (1 if name == "in flight" else 2)


@pytest.mark.anyio
async def test_a_round_trip_answers_each_append_of_each_workspace_on_its_own(
    client: Redis, workspace: str
) -> None:
    """One round trip carries one append.lua call per workspace, each running that
    workspace's queued appends in order; a conflict, a duplicate or an append that fails in
    the script is that append's answer alone."""
    log = EventLog(client, retention=0, idempotency_ttl_ms=DAY_MS)
    other = f"{workspace}_other"
    first = await log.append(workspace, [event(0)], idempotency=Idempotency("op", "k1", "fp"))
    broken = WorkspaceKeys(workspace).idempotency("op", "broken")
    await client.set(broken, "not a hash")  # HMGET on it fails inside the script
    rounds: list[int] = []
    run_all = scripts.run_all

    async def counting_run_all(redis: Redis, calls: list[scripts.Call]) -> list[Any]:
        rounds.append(len(calls))
        return await run_all(redis, calls)

    async def attempt(ws: str, **options: Any) -> Appended | Exception:
        try:
            return await log.append(ws, [event(1)], **options)
        except (VersionConflict, Unavailable) as exc:
            return exc

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scripts, "run_all", counting_run_all)
        async with batching(log, True):
            results = await asyncio.gather(
                attempt(workspace),
                attempt(other),
                attempt(workspace, idempotency=Idempotency("op", "broken", "fp")),
                attempt(workspace, expect={"plan": 7}),
                attempt(workspace, idempotency=Idempotency("op", "k1", "fp")),
                attempt(other),
                attempt(workspace),
            )
    assert rounds == [2]  # both workspaces in one round trip, one call each
    ok, other_1, failed, conflict, duplicate, other_2, ok_2 = results
    assert isinstance(ok, Appended)
    assert isinstance(ok_2, Appended)
    assert (ok.first_seq, ok_2.first_seq) == (2, 3)  # in the order they came
    assert isinstance(other_1, Appended)
    assert isinstance(other_2, Appended)
    assert (other_1.first_seq, other_2.first_seq) == (1, 2)
    assert isinstance(failed, Unavailable)
    assert "WRONGTYPE" in failed.message
    assert isinstance(conflict, VersionConflict)
    assert conflict.entity == "plan"
    assert isinstance(duplicate, Appended)
    assert duplicate.duplicate
    assert duplicate.first_seq == first.first_seq
    assert await log.last_seq(workspace) == 3
