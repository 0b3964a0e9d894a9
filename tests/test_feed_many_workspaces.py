"""Live delivery to many active workspaces on one replica, end to end.

A real server process on the test Redis, one open ``/events`` stream per workspace, held by
raw asyncio sockets in this process; then one event appended to some of the workspaces,
including ones past the 100th. Every one must arrive, and the replica's feed must read them
all over a few shared Redis connections (``orch-feed:<replica>``), not one per workspace.
"""

import asyncio
import math
import re
import time
from collections.abc import Callable

import httpx
import pytest
from redis.asyncio import Redis
from ulid import ULID

from tests.servers import HOST, ServerProcess

CALL = {"tool": "fs.read", "sessionID": "s1", "agentName": "agent-1", "status": "ok"}
HEARTBEAT = b"\n: keep-alive\n\n"  # a comment frame (the headers hold "connection: keep-alive")
CALL_FRAME = re.compile(rb"id: (\d+)\nevent: tool.call\n")
DELIVERY_WAIT_S = 30.0  # generous: a delivered event takes milliseconds, a lost one forever


class Stream(asyncio.Protocol):
    """One open ``/events`` stream: notes its first heartbeat (it is live: past subscribe and
    replay) and when each tool call arrived, by seq."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.body = b""
        self.scanned = 0
        self.live = asyncio.Event()
        self.closed = asyncio.Event()
        self.arrived: dict[int, float] = {}
        self.got_call = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.body += data
        if HEARTBEAT in self.body:
            self.live.set()
        for found in CALL_FRAME.finditer(self.body, self.scanned):
            self.arrived.setdefault(int(found.group(1)), now)
            self.got_call.set()
        self.scanned = max(self.scanned, len(self.body) - 64)  # a frame cut by a read

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    async def arrival(self, seq: int) -> float:
        while seq not in self.arrived:
            self.got_call.clear()
            await self.got_call.wait()
        return self.arrived[seq]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def open_streams(server: ServerProcess, workspaces: list[str]) -> list[Stream]:
    """An ``/events`` stream per workspace, each live (it got a heartbeat), opened 100 at a
    time so that the server's accept queue is never the limit."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(100)

    async def one(workspace: str) -> Stream:
        path = f"/api/v1/workspaces/{workspace}/orchestration/events"
        request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n\r\n"
        async with gate:
            _, stream = await loop.create_connection(
                lambda: Stream(request.encode()), HOST, server.port
            )
            await asyncio.wait_for(stream.live.wait(), 30)
            assert stream.body.startswith(b"HTTP/1.1 200"), stream.body[:200]
            return stream

    return list(await asyncio.gather(*(one(ws) for ws in workspaces)))


async def feed_connections(redis: Redis, replica: str) -> int:
    """Connections the replica's feed holds on Redis now (by client name)."""
    clients = await redis.client_list()
    return sum(1 for c in clients if c["name"] == f"orch-feed:{replica}")


async def replica_of(http: httpx.AsyncClient, server: ServerProcess, workspace: str) -> str:
    dump = await http.get(server.workspace_url(workspace) + "/debug-dump")
    assert dump.status_code == 200, dump.text
    found = re.search(r'"replica":\s*"([^"]+)"', dump.text)
    assert found, dump.text[:500]
    return found.group(1)


async def deliver(
    http: httpx.AsyncClient, server: ServerProcess, streams: dict[str, Stream], chosen: list[int]
) -> dict[int, float]:
    """Append one tool call to each chosen workspace (by its index in ``streams``): the
    seconds from each append's request to the event's arrival on the workspace's stream.
    Every one must arrive within the wait."""
    workspaces = list(streams)

    async def one(index: int) -> float | None:
        workspace = workspaces[index]
        started = time.monotonic()
        response = await http.post(server.workspace_url(workspace) + "/log", json={"items": [CALL]})
        assert response.status_code == 201, response.text
        seq = response.json()["items"][0]["seq"]
        try:
            arrived = await asyncio.wait_for(streams[workspace].arrival(seq), DELIVERY_WAIT_S)
        except TimeoutError:
            return None
        return arrived - started

    latencies = dict(zip(chosen, await asyncio.gather(*map(one, chosen)), strict=True))
    lost = [index for index, latency in latencies.items() if latency is None]
    assert not lost, f"not delivered within {DELIVERY_WAIT_S} s to the workspaces at {lost}"
    return {index: latency for index, latency in latencies.items() if latency is not None}


def feed_errors(server: ServerProcess) -> int:
    return server.log_path.read_text().count("feed.redis_error")


@pytest.mark.anyio
@pytest.mark.timeout(150)
async def test_a_thousand_active_workspaces_all_get_live_events(
    make_server: Callable[..., ServerProcess], client: Redis
) -> None:
    server = make_server()
    workspaces = [f"ws_{ULID()}" for _ in range(1000)]
    streams = dict(zip(workspaces, await open_streams(server, workspaces), strict=True))
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            chosen = [0, 1, 98, 99, 100, 101, 150, 500, 998, 999]
            latencies = await deliver(http, server, streams, chosen)
            replica = await replica_of(http, server, workspaces[0])
        readers = await feed_connections(client, replica)
        print(
            f"\n1,000 workspaces: append to delivery, 1,000th {latencies[999]:.3f} s, slowest "
            f"{max(latencies.values()):.3f} s; {readers} feed connection(s); "
            f"{feed_errors(server)} feed.redis_error lines"
        )
        assert readers <= 2  # one shared reader (1,000 streams per read), not ~1,000
        assert feed_errors(server) == 0
    finally:
        for stream in streams.values():
            stream.close()


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_readers_are_shared_up_to_the_streams_per_read_and_follow_joins_and_leaves(
    make_server: Callable[..., ServerProcess], client: Redis
) -> None:
    per_read = 100
    server = make_server(ORCH_FEED_STREAMS_PER_READ=str(per_read))
    workspaces = [f"ws_{ULID()}" for _ in range(250)]
    opened = await open_streams(server, workspaces)
    streams = dict(zip(workspaces, opened, strict=True))
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            replica = await replica_of(http, server, workspaces[0])
            assert await feed_connections(client, replica) <= math.ceil(250 / per_read) + 1

            # Every other one leaves; the rest, and two that come back, are still served.
            for stream in opened[::2]:
                stream.close()
            await asyncio.gather(*(s.closed.wait() for s in opened[::2]))
            back = await open_streams(server, workspaces[0:4:2])
            streams.update(zip(workspaces[0:4:2], back, strict=True))
            await deliver(http, server, streams, [0, 1, 2, 3, 101, 149, 151, 201, 247, 249])
        assert feed_errors(server) == 0
    finally:
        for stream in [*opened, *streams.values()]:
            stream.close()
