from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from ulid import ULID

from orchestrator.redis_server import RedisServer
from tests.servers import ServerProcess


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis server on a free port, for the whole session (never the machine's own)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    """An async client of the test Redis server."""
    redis = Redis.from_url(redis_url)
    try:
        yield redis
    finally:
        await redis.aclose()


@pytest.fixture
def workspace() -> str:
    """A fresh workspace id: tests share one Redis and never see each other's data."""
    return f"ws_{ULID()}"


@pytest.fixture
def make_server(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., ServerProcess]]:
    """Start API server processes (``ORCH_*`` overrides as keywords); all stop after the test."""
    started: list[ServerProcess] = []

    def make(redis: str | None = redis_url, **env: str) -> ServerProcess:
        server = ServerProcess(redis, tmp_path / f"server-{len(started)}.log", **env)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        # Graceful, so that a server that started its own Redis stops it too (a SIGKILLed
        # one would leave that Redis running); one a test already killed is skipped.
        server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[ServerProcess]:
    """One API server process shared by the tests that need nothing special of it."""
    process = ServerProcess(redis_url, tmp_path_factory.mktemp("server") / "server.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def api(server: ServerProcess, workspace: str) -> Iterator[httpx.Client]:
    """An HTTP client for the workspace's orchestration endpoints."""
    with httpx.Client(base_url=server.workspace_url(workspace), timeout=10) as client:
        yield client
