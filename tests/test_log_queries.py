"""Log queries against a real Redis, checked against the obvious answer computed in Python:
every filter combination, time ranges, both orders and every page, whether the intersection
is computed and dropped, kept, brought up to date after more calls, or computed again after
a purge; the callID index (a hash) with callIDs shared by several calls."""

import random
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from orchestrator.eventlog import EventLog
from orchestrator.events import OrchestrationPurged, ToolCall, new_event
from orchestrator.keys import LOG_FILTER_FIELDS, WorkspaceKeys
from orchestrator.replies import as_str
from projections.log import LogQuery, query_log
from projections.runner import Projector

VALUES: dict[str, list[str]] = {
    "tool": ["fs.read", "fs.write", "shell"],
    "status": ["ok", "error"],
    "sessionID": ["s1", "s2", "s3"],
    "agentName": ["build-agent", "review-agent"],
    "entryID": ["entry_1", "entry_2"],
    "callID": [f"call_{n}" for n in range(40)],  # 40 ids for ~200 calls: most are shared
    "container_id": ["ctr_1", "ctr_2"],
}
OPTIONAL = {"entryID", "container_id"}


def calls(count: int, rng: random.Random) -> list[ToolCall]:
    def pick(field: str) -> Any:
        if field in OPTIONAL and rng.random() < 0.3:
            return None
        return rng.choice(VALUES[field])

    return [
        ToolCall(
            **{f: pick(f) for f in LOG_FILTER_FIELDS},
            timestamp=1_700_000_000_000 + rng.randrange(100) * 1000,  # many equal timestamps
            duration=1,
            corrections=[],
            workspaceID="ws",
        )
        for _ in range(count)
    ]


def a_query(rng: random.Random) -> LogQuery:
    fields = rng.sample(LOG_FILTER_FIELDS, rng.choice([0, 1, 2, 2, 3, 4]))
    filters = {f: rng.choice(VALUES[f]) for f in fields}
    start = 1_700_000_000_000 + rng.randrange(100) * 1000
    ranged = rng.random() < 0.3
    return LogQuery(
        filters=filters,
        from_ms=start if ranged else None,
        to_ms=start + rng.randrange(50) * 1000 if ranged else None,
        page=rng.choice([1, 1, 2, 3]),
        limit=rng.choice([1, 5, 50]),
        descending=rng.random() < 0.5,
    )


def expected(recorded: list[tuple[int, ToolCall]], q: LogQuery) -> tuple[list[int], int]:
    """(seqs on the page, total) the query must answer."""
    matching = [
        (call.timestamp, seq)
        for seq, call in recorded
        if all(getattr(call, f) == v for f, v in q.filters.items())
        and (q.from_ms is None or call.timestamp >= q.from_ms)
        and (q.to_ms is None or call.timestamp <= q.to_ms)
    ]
    matching.sort(reverse=q.descending)
    start = (q.page - 1) * q.limit
    return [seq for _, seq in matching[start : start + q.limit]], len(matching)


class Log:
    def __init__(self, client: Redis, workspace: str) -> None:
        self.client, self.workspace = client, workspace
        self.eventlog = EventLog(client, retention=0, idempotency_ttl_ms=60_000)
        self.projector = Projector(self.eventlog, batch=64)
        self.recorded: list[tuple[int, ToolCall]] = []

    async def record(self, batch: list[ToolCall]) -> None:
        appended = await self.eventlog.append(self.workspace, [new_event(c) for c in batch])
        self.recorded += zip(appended.seqs, batch, strict=True)
        await self.projector.catch_up(self.workspace)

    async def purge(self) -> None:
        await self.eventlog.append(self.workspace, [new_event(OrchestrationPurged(["events"]))])
        self.recorded.clear()
        await self.projector.catch_up(self.workspace)

    async def check(self, q: LogQuery, keep_from: int) -> None:
        page = await query_log(self.client, self.workspace, q, keep_from=keep_from)
        seqs, total = expected(self.recorded, q)
        by_seq = dict(self.recorded)
        assert (page.total, len(page.items)) == (total, len(seqs)), q
        assert [msgspec.json.decode(i, type=ToolCall) for i in page.items] == [
            by_seq[s] for s in seqs
        ], q

    async def scratch_keys(self) -> list[str]:
        pattern = f"{WorkspaceKeys(self.workspace).caches}:log:*"
        found = [as_str(k) async for k in self.client.scan_iter(match=pattern)]
        return [k for k in found if not k.endswith(":meta")]


@pytest.mark.anyio
@pytest.mark.parametrize("keep_from", [1, 10**9], ids=["kept", "scratch"])
async def test_any_query_answers_what_the_calls_say(
    client: Redis, workspace: str, keep_from: int
) -> None:
    rng = random.Random(keep_from)
    log = Log(client, workspace)
    queries = [a_query(rng) for _ in range(60)]
    for round_ in range(4):
        await log.record(calls(rng.randrange(20, 120), rng))
        if round_ == 2:  # kept intersections must notice that calls went away
            await log.purge()
            await log.record(calls(30, rng))
        for q in queries:
            await log.check(q, keep_from)
        await log.record(calls(rng.randrange(1, 5), rng))
        for q in queries:  # the same queries again: kept ones are brought up to date
            await log.check(q, keep_from)
        for _ in range(20):
            await log.check(a_query(rng), keep_from)
    kept = await log.scratch_keys()
    if keep_from > 1:
        assert kept == []  # scratch intersections are dropped within the query
    else:  # kept, but never one that includes a callID's calls (not kept up to date)
        assert kept
    assert not [k for k in kept if k.endswith(":call")]


@pytest.mark.anyio
async def test_a_call_id_finds_every_call_recorded_with_it(client: Redis, workspace: str) -> None:
    rng = random.Random(7)
    log = Log(client, workspace)
    shared = [
        msgspec.structs.replace(c, callID="call_retried", status=s)
        for c, s in zip(calls(3, rng), ["error", "error", "ok"], strict=True)
    ]
    await log.record([shared[0], *calls(10, rng), shared[1]])  # twice in one batch
    await log.record([*calls(5, rng), shared[2]])  # and again in a later one
    for filters in (
        {"callID": "call_retried"},
        {"callID": "call_retried", "status": "error"},
        {"callID": "call_retried", "status": "ok", "tool": shared[2].tool},
        {"callID": "call_unknown"},
        {"callID": "call_unknown", "status": "ok"},
    ):
        for descending in (False, True):
            await log.check(LogQuery(filters=filters, descending=descending), keep_from=1)
    # A callID of one call maps to its seq; one that came again, to its own sorted set.
    keys = WorkspaceKeys(workspace)
    assert await client.hget(keys.log_call_ids, "call_retried") == b"*"
    seqs = [seq for seq, c in log.recorded if c.callID == "call_retried"]
    index = keys.log_index("callID", "call_retried")
    assert sorted(await client.zrange(index, 0, -1)) == [f"{s:016d}".encode() for s in seqs]
    assert await client.sismember(keys.log_indexes, index)
    once_seq, once = next((s, c) for s, c in log.recorded if c.callID != "call_retried")
    if [c.callID for _, c in log.recorded].count(once.callID) == 1:
        assert await client.hget(keys.log_call_ids, once.callID) == f"{once_seq:016d}".encode()
