"""The feed under an ACL without CLIENT UNBLOCK (in @admin and @dangerous, so often denied):
a workspace that becomes active still gets its events, by the shared read's BLOCK timeout
instead of a wake, and the operator is told once what permission is missing.

On a Redis of this module's own, whose ACL users would otherwise be shared with every test.
"""

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import structlog
from redis.asyncio import ConnectionPool, Redis
from ulid import ULID

from orchestrator import feed as feed_module
from orchestrator.connection import pool_options
from orchestrator.eventlog import EventLog
from orchestrator.feed import Feed
from orchestrator.redis_server import RedisServer
from tests.test_feed_shared_read import SEQ_ONLY, append, readers_blocked

BLOCK_MS = 1000  # short, since the events come by the read's timeout here
WAIT_S = 15.0
USER = "feeder"
PASSWORD = "feeder-password"


@pytest.fixture(scope="module")
def restricted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("acl-redis"), appendonly=False) as server:
        yield server


@pytest.fixture(autouse=True)
def short_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feed_module, "XREAD_BLOCK_MS", BLOCK_MS)


def user_url(server: RedisServer) -> str:
    return f"redis://{USER}:{PASSWORD}@127.0.0.1:{server.port}/0"


@pytest.mark.anyio
@pytest.mark.timeout(90)
async def test_events_arrive_and_the_missing_permission_is_logged_once(
    restricted: RedisServer, tmp_path: Path
) -> None:
    admin = Redis.from_url(restricted.url)
    await admin.acl_setuser(
        USER,
        enabled=True,
        passwords=[f"+{PASSWORD}"],
        keys=["~*"],
        channels=["&*"],
        commands=["+@all", "-client|unblock"],
        reset=True,
    )
    url = user_url(restricted)
    options = pool_options(url)
    name = f"feed-{ULID()}"
    requests = Redis.from_pool(ConnectionPool.from_url(url, **options))
    blocking = Redis.from_pool(ConnectionPool.from_url(url, client_name=name, **options))
    feed = Feed(blocking, EventLog(requests, 0, 60_000), [SEQ_ONLY], 100)
    workspaces = [f"ws_{ULID()}" for _ in range(4)]
    try:
        with structlog.testing.capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                await tg.start(feed.run)
                async with feed.subscribe(workspaces[0], "events"):
                    await readers_blocked(admin, name)
                    for seq, workspace in enumerate(workspaces[1:], start=1):
                        # Each joins a read already blocked in Redis: a wake is tried.
                        async with feed.subscribe(workspace, "events") as subscriber:
                            await append(admin, workspace, seq)
                            with anyio.fail_after(WAIT_S):
                                frames = await subscriber.next(WAIT_S)
                            assert [s for s, _ in frames] == [seq]
                        await readers_blocked(admin, name)
                tg.cancel_scope.cancel()
    finally:
        await requests.aclose()
        await blocking.aclose()
        await admin.aclose()
    refused = [entry for entry in logs if entry["event"] == "feed.wake_refused"]
    assert len(refused) == 1, logs
    assert "CLIENT UNBLOCK" in refused[0]["reason"]
    assert "NOPERM" in refused[0]["error"] or "permission" in refused[0]["error"]
