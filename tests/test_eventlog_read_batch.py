"""EventLog.read_batch on the test Redis: a read bounded in bytes as well as in events,
through one plain XRANGE for a short read and read_bounded.lua for a long one. Both give
the same batches: every entry once, in order, the first always however large."""

import pytest
from redis.asyncio import Redis

from orchestrator.eventlog import PLAIN_READ, EventLog, RawEntry, fitting
from orchestrator.keys import WorkspaceKeys

BUDGET = 10_000


async def fill(client: Redis, workspace: str, sizes: list[int]) -> None:
    key = WorkspaceKeys(workspace).events
    for seq, size in enumerate(sizes, 1):
        fields = {"type": "test.blob", "payload": b"x" * size, "ts": "0"}
        await client.xadd(key, fields, id=f"{seq}-0")  # type: ignore[arg-type]


async def expected(log: EventLog, workspace: str, after: int, count: int) -> list[RawEntry]:
    entries = await log.read_raw(workspace, after, count)
    return entries[: fitting(entries, BUDGET)]


@pytest.mark.anyio
@pytest.mark.parametrize("count", [1, 5, PLAIN_READ, PLAIN_READ + 1, 100, 1000])
async def test_a_read_stops_at_the_count_or_the_budget_whichever_comes_first(
    client: Redis, workspace: str, count: int
) -> None:
    sizes = [10] * 150 + [3000] * 20 + [BUDGET * 2] * 3 + [10] * 200
    await fill(client, workspace, sizes)
    log = EventLog(client, 0, 60_000)
    position, read = 0, []
    while position < len(sizes):
        entries, cut = await log.read_batch(workspace, position, count, BUDGET)
        assert entries == await expected(log, workspace, position, count)
        assert 1 <= len(entries) <= count
        size = sum(len(type_) + len(payload) for _, (type_, payload) in entries)
        assert len(entries) == 1 or size <= BUDGET
        assert cut == (len(entries) < count and position + len(entries) < len(sizes))
        position += len(entries)
        read += entries
    assert [int(entry_id[:-2]) for entry_id, _ in read] == list(range(1, len(sizes) + 1))
    assert await log.read_batch(workspace, position, count, BUDGET) == ([], False)


@pytest.mark.anyio
async def test_a_long_read_skips_a_trimmed_range_as_xrange_does(
    client: Redis, workspace: str
) -> None:
    await fill(client, workspace, [10] * 300)
    await client.xtrim(WorkspaceKeys(workspace).events, minid="101-0")
    log = EventLog(client, 0, 60_000)
    entries, cut = await log.read_batch(workspace, 0, 1000, BUDGET)
    assert [int(entry_id[:-2]) for entry_id, _ in entries] == list(range(101, 301))
    assert not cut
