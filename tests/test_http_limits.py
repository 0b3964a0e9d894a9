"""Slow and idle clients against a real server process (orchestrator/http_limits.py): half-sent
requests are closed once their deadline passes, /healthz answers meanwhile, a head past its
size limit is refused, and connections past the cap are answered 503.

Both HTTP implementations are served: httptools (the default) and h11."""

import os
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from tests.servers import HOST, ROOT, TEST_ENV, end, free_port

HEADER_TIMEOUT_S = 3.0
BODY_TIMEOUT_S = 3.0
LIMITS = {"ORCH_HEADER_TIMEOUT_S": "3", "ORCH_BODY_TIMEOUT_S": "3"}
HALF_SENT = 300  # per kind below: well inside this process's and the server's fd limits
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: "
PARTIAL_BODY = (
    b"POST /api/v1/workspaces/ws_slow/orchestration/log HTTP/1.1\r\nHost: test\r\n"
    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{"
)


@contextmanager
def serving(redis_url: str, log: Path, *args: str, **env: str) -> Iterator[str]:
    """``orchestrator serve`` in its own process, with more options; its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "orchestrator", "serve", "--host", HOST, "--port", str(port)]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, *args],
            cwd=ROOT,
            env={**os.environ, **TEST_ENV, "REDIS_URL": redis_url, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        end(process)


@pytest.fixture(params=["httptools", "h11"])
def http(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def connect(port: int, first: bytes) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=10)
    if first:
        sock.sendall(first)
    sock.setblocking(False)
    return sock


def wait_closed(socks: list[socket.socket], timeout: float) -> dict[socket.socket, float]:
    """When (monotonic) the server closed each socket, for those it closed in ``timeout``."""
    closed: dict[socket.socket, float] = {}
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while len(closed) < len(socks) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                try:
                    data = ready.recv(4096)
                except ConnectionResetError:
                    data = b""
                if not data:  # a late request gets no answer, only the close
                    closed[ready] = time.monotonic()
                    selector.unregister(ready)
    return closed


@pytest.mark.timeout(110)
def test_half_sent_requests_are_closed_and_healthz_answers(
    redis_url: str, tmp_path: Path, http: str
) -> None:
    with serving(redis_url, tmp_path / "server.log", "--http", http, **LIMITS) as url:
        port = int(url.rsplit(":", 1)[1])
        opened = time.monotonic()
        socks = [
            connect(port, first)
            for first in (b"", PARTIAL_HEAD, PARTIAL_BODY)
            for _ in range(HALF_SENT // 3)
        ]
        held = time.monotonic()
        with httpx.Client(timeout=10) as client:
            health = client.get(f"{url}/healthz")
            answered = time.monotonic()
        assert health.status_code == 200
        closed = wait_closed(socks, timeout=HEADER_TIMEOUT_S * 10)
        assert len(closed) == len(socks)
        # Not before the deadline: a client inside it is never cut off (half a second of
        # slack for clocks read in two processes).
        assert min(closed.values()) - opened > HEADER_TIMEOUT_S - 0.5
        print(
            f"\n{http}: {len(socks)} half-sent connections held {held - opened:.2f}s to open; "
            f"/healthz answered in {answered - held:.3f}s while held; all closed "
            f"{min(closed.values()) - opened:.2f}..{max(closed.values()) - opened:.2f}s "
            f"after opening (deadline {HEADER_TIMEOUT_S:g}s)"
        )
        for sock in socks:
            sock.close()
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200


@pytest.mark.timeout(60)
def test_a_trickled_head_is_closed_at_its_deadline(redis_url: str, tmp_path: Path) -> None:
    """Never idle, yet late: the head's deadline is fixed, not renewed by each byte."""
    with serving(redis_url, tmp_path / "server.log", **LIMITS) as url:
        sock = socket.create_connection((HOST, int(url.rsplit(":", 1)[1])), timeout=10)
        started = time.monotonic()
        sock.sendall(PARTIAL_HEAD)
        try:
            while time.monotonic() - started < HEADER_TIMEOUT_S * 5:
                sock.sendall(b"a")
                time.sleep(0.25)
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(10)
        try:
            rest = sock.recv(4096)
        except ConnectionResetError:
            rest = b""
        assert rest == b""
        sock.close()


@pytest.mark.timeout(60)
def test_a_slow_request_inside_its_deadlines_is_served(
    redis_url: str, tmp_path: Path, http: str
) -> None:
    with serving(redis_url, tmp_path / "server.log", "--http", http, **LIMITS) as url:
        sock = socket.create_connection((HOST, int(url.rsplit(":", 1)[1])), timeout=10)
        for part in (b"GET /healthz HTTP/1.1\r\n", b"Host: test\r\n", b"\r\n"):
            sock.sendall(part)
            time.sleep(0.3)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        sock.close()


@pytest.mark.timeout(60)
def test_a_head_past_its_size_limit_is_refused(redis_url: str, tmp_path: Path, http: str) -> None:
    log = tmp_path / "server.log"
    with serving(redis_url, log, "--http", http, ORCH_MAX_HEAD_BYTES="4096") as url:
        sock = socket.create_connection((HOST, int(url.rsplit(":", 1)[1])), timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 5000)
        time.sleep(0.3)  # the server has read the incomplete head
        with suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400 ")
        sock.close()
        if http == "httptools":  # h11 bounds only a head still incomplete after a read
            whole = httpx.get(f"{url}/healthz", headers={"X-Big": "a" * 5000}, timeout=10)
            assert whole.status_code == 400
        assert httpx.get(f"{url}/healthz", headers={"X-Fits": "a" * 3000}).status_code == 200


@pytest.mark.timeout(60)
def test_connections_past_the_cap_are_answered_503(redis_url: str, tmp_path: Path) -> None:
    cap = 20
    env = {**LIMITS, "ORCH_MAX_CONNECTIONS": str(cap)}
    with serving(redis_url, tmp_path / "server.log", **env) as url:
        port = int(url.rsplit(":", 1)[1])
        socks = [connect(port, PARTIAL_HEAD) for _ in range(cap)]
        time.sleep(0.5)  # the server has accepted them all
        over = socket.create_connection((HOST, port), timeout=10)
        assert over.recv(4096).startswith(b"HTTP/1.1 503 ")
        over.close()
        assert len(wait_closed(socks, timeout=HEADER_TIMEOUT_S * 10)) == cap
        for sock in socks:
            sock.close()
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200


@pytest.mark.timeout(60)
def test_a_line_break_between_requests_does_not_hold_the_connection(
    redis_url: str, tmp_path: Path, http: str
) -> None:
    """A bare CRLF after a response stops uvicorn's keep-alive timer, and llhttp skips it
    without starting a request: the head deadline must start on it all the same."""
    env = {"ORCH_HEADER_TIMEOUT_S": "1", "ORCH_KEEP_ALIVE_S": "1"}
    with serving(redis_url, tmp_path / "server.log", "--http", http, **env) as url:
        with socket.create_connection((HOST, int(url.rsplit(":", 1)[1])), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
            sock.sendall(b"\r\n")
            sent = time.monotonic()
            sock.setblocking(False)
            closed = wait_closed([sock], timeout=15)
        assert sock in closed  # by the 1 s head deadline (or h11's 400), not never
        print(f"\n{http}: closed {closed[sock] - sent:.2f}s after a bare CRLF")


@pytest.mark.timeout(90)
def test_a_header_that_never_ends_is_refused(redis_url: str, tmp_path: Path, http: str) -> None:
    """httptools reports a header only once it is complete: a value sent forever in small
    pieces must still meet the head size bound, not the (long) head deadline."""
    env = {"ORCH_MAX_HEAD_BYTES": "4096", "ORCH_HEADER_TIMEOUT_S": "60"}
    with serving(redis_url, tmp_path / "server.log", "--http", http, **env) as url:
        with socket.create_connection((HOST, int(url.rsplit(":", 1)[1])), timeout=20) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Endless: ")
            sent = 0
            with suppress(BrokenPipeError, ConnectionResetError):
                while sent < 256 * 1024:  # 64 times the bound, in 1 KiB pieces
                    sock.sendall(b"a" * 1024)
                    sent += 1024
                    time.sleep(0.001)
            reply = sock.recv(4096)  # within 20 s: long before the 60 s head deadline
        assert reply.startswith(b"HTTP/1.1 400 "), reply
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
