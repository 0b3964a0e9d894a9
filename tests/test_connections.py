"""Redis connections grow with active workspaces, never with SSE clients; commands are
packed in C exactly as redis-py packs them."""

from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx
import pytest
import redis
from redis.asyncio import Connection
from redis.exceptions import DataError

from api.app import POOL_SIZE
from orchestrator.connection import CheckedConnection
from tests.servers import ServerProcess

CLIENTS_PER_WORKSPACE = 40
CALL = {"tool": "t", "sessionID": "s", "agentName": "a", "status": "ok"}


def connections_by_name(redis_url: str, replica: str) -> dict[str, int]:
    with redis.Redis.from_url(redis_url) as client:
        counts: dict[str, int] = {}
        for info in client.client_list():
            name = info.get("name", "")
            if name.endswith(replica):
                kind = name.split(":", 1)[0]
                counts[kind] = counts.get(kind, 0) + 1
        return counts


@pytest.mark.anyio
async def test_sse_clients_share_one_reader_per_workspace(
    make_server: Callable[..., ServerProcess], redis_url: str
) -> None:
    server = make_server()
    workspaces = ["ws_conn_a", "ws_conn_b"]
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client, AsyncExitStack() as stack:
        for ws in workspaces:
            url = server.workspace_url(ws) + "/events"
            for _ in range(CLIENTS_PER_WORKSPACE):
                response = await stack.enter_async_context(client.stream("GET", url))
                assert response.status_code == 200
        counts_url = server.workspace_url(workspaces[0]) + "/events/connections"
        for _ in range(100):  # reports land within a few tens of ms
            if (await client.get(counts_url)).json()["count"] == CLIENTS_PER_WORKSPACE:
                break
            await anyio.sleep(0.05)
        else:
            pytest.fail("the subscriber count never reached the number of clients")
        posted = await client.post(server.workspace_url(workspaces[1]) + "/log", json=CALL)
        assert posted.status_code == 201

        dump = (await client.get(server.workspace_url(workspaces[0]) + "/debug-dump")).json()
        replica = dump["caches"]["replica"]
        assert dump["caches"]["feed"]["subscribers"] == {"events": CLIENTS_PER_WORKSPACE}
        counts = connections_by_name(redis_url, replica)

    # One blocking read shared by the workspaces with subscribers (up to
    # ORCH_FEED_STREAMS_PER_READ of them): 1, for 2 workspaces and 80 SSE clients.
    assert counts["orch-feed"] == 1
    # Requests go through a fixed pool, whatever the number of clients.
    assert 1 <= counts["orch-api"] <= POOL_SIZE


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "a" * 40, 2, "orch:{ws}:events", "", 86_400_000, 1.5, -3, b"\x00\xff\r\n"),
        ("SET", "k", "é" * 3, memoryview(b"view")),
        ("HSET", "h", "f", b"x" * 100_000),  # large values: redis-py cuts them into chunks
        ("CONFIG GET", "maxmemory"),  # a name with a space: redis-py splits it
        (b"CLIENT SETNAME", b"x"),
    ],
)
def test_commands_are_packed_as_redis_py_packs_them(args: tuple[Any, ...]) -> None:
    ours = CheckedConnection().pack_command(*args)
    theirs = Connection().pack_command(*args)
    assert b"".join(bytes(c) for c in ours) == b"".join(bytes(c) for c in theirs)


def test_arguments_redis_cannot_take_are_refused_as_redis_py_refuses_them() -> None:
    bads: list[Any] = [True, None, {"a": 1}]
    for bad in bads:
        with pytest.raises(DataError, match="Invalid input"):
            CheckedConnection().pack_command("SET", "k", bad)
