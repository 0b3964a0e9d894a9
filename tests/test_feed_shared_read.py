"""The feed's shared read, in process on the test Redis: workspaces join a blocked XREAD
(woken with CLIENT UNBLOCK), and a reader whose connection is killed reconnects and goes on.

Each read blocks for 20 s here, so an event that arrives within 10 s was read by a read that
was woken for its workspace, not by the next read after a timeout.
"""

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest
from redis.asyncio import ConnectionPool, Redis
from ulid import ULID

from orchestrator import feed as feed_module
from orchestrator.connection import pool_options
from orchestrator.eventlog import EventLog
from orchestrator.feed import Feed, StreamKind, Subscriber
from orchestrator.keys import WorkspaceKeys

SEQ_ONLY = StreamKind("events", lambda seq, type_, payload: seq)
LONG_BLOCK_MS = 20_000
WAIT_S = 10.0


@pytest.fixture(autouse=True)
def long_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed_module, "XREAD_BLOCK_MS", LONG_BLOCK_MS)


@asynccontextmanager
async def running_feed(redis_url: str, name: str, per_read: int) -> AsyncIterator[Feed]:
    """A feed on the test Redis; its readers' connections are named ``name``."""
    # The service's connection options: a socket timeout (30 s) longer than the reads here.
    options = pool_options(redis_url)
    requests = Redis.from_pool(ConnectionPool.from_url(redis_url, **options))
    blocking = Redis.from_pool(ConnectionPool.from_url(redis_url, client_name=name, **options))
    feed = Feed(blocking, EventLog(requests, 0, 60_000), [SEQ_ONLY], 100, streams_per_read=per_read)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(feed.run)
            yield feed
            tg.cancel_scope.cancel()
    finally:
        await requests.aclose()
        await blocking.aclose()


async def readers_blocked(client: Redis, name: str, count: int = 1) -> list[int]:
    """Wait until ``count`` connections named ``name`` are blocked in XREAD: their ids."""
    with anyio.fail_after(WAIT_S):
        while True:
            clients = [c for c in await client.client_list() if c["name"] == name]
            blocked = [int(c["id"]) for c in clients if c["cmd"] == "xread" and "b" in c["flags"]]
            if len(blocked) == count == len(clients):
                return blocked
            await anyio.sleep(0.01)


async def append(client: Redis, workspace: str, seq: int) -> None:
    """An event in the workspace's stream, as append.lua writes it."""
    fields = {"type": "tool.call", "payload": b'{"n":%d}' % seq}
    await client.xadd(WorkspaceKeys(workspace).events, fields, id=f"{seq}-0")  # type: ignore[arg-type]


async def received(subscriber: Subscriber) -> list[int]:
    with anyio.fail_after(WAIT_S):
        return [seq for seq, _ in await subscriber.next(WAIT_S)]


@pytest.mark.anyio
async def test_workspaces_that_become_active_join_the_blocked_read(
    redis_url: str, client: Redis
) -> None:
    name = f"feed-{ULID()}"
    workspaces = [f"ws_{ULID()}" for _ in range(60)]
    async with running_feed(redis_url, name, per_read=1000) as feed, AsyncExitStack() as stack:
        await stack.enter_async_context(feed.subscribe(workspaces[0], "events"))
        await readers_blocked(client, name)
        # Each joins while the read is blocked (or while the one woken for the last join is
        # being sent), and nothing else ends that read: only the wake gets its event read.
        for ws in workspaces[1:]:
            subscriber = await stack.enter_async_context(feed.subscribe(ws, "events"))
            await append(client, ws, 1)
            assert await received(subscriber) == [1]
        assert len(await readers_blocked(client, name)) == 1  # one read for all of them


@pytest.mark.anyio
async def test_readers_are_shared_up_to_the_streams_per_read(redis_url: str, client: Redis) -> None:
    name = f"feed-{ULID()}"
    workspaces = [f"ws_{ULID()}" for _ in range(7)]
    async with running_feed(redis_url, name, per_read=3) as feed, AsyncExitStack() as stack:
        subscribers = [
            await stack.enter_async_context(feed.subscribe(ws, "events")) for ws in workspaces
        ]
        await readers_blocked(client, name, count=3)  # ceil(7 / 3)
        for ws in workspaces:
            await append(client, ws, 1)
        for subscriber in subscribers:
            assert await received(subscriber) == [1]


@pytest.mark.anyio
async def test_a_reader_whose_connection_is_killed_reconnects_and_is_still_woken(
    redis_url: str, client: Redis
) -> None:
    name = f"feed-{ULID()}"
    before, after = f"ws_{ULID()}", f"ws_{ULID()}"
    async with running_feed(redis_url, name, per_read=1000) as feed, AsyncExitStack() as stack:
        subscriber = await stack.enter_async_context(feed.subscribe(before, "events"))
        [reader] = await readers_blocked(client, name)
        await client.client_kill_filter(_id=str(reader))
        await append(client, before, 1)  # while the reader is away: read when it is back
        assert await received(subscriber) == [1]
        [again] = await readers_blocked(client, name)
        assert again != reader

        # The new connection's id is the one woken for a workspace that joins now.
        joined = await stack.enter_async_context(feed.subscribe(after, "events"))
        await append(client, after, 1)
        assert await received(joined) == [1]
        await append(client, before, 2)
        assert await received(subscriber) == [2]
