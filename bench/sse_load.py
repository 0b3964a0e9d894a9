"""SSE load generator: many subscribers of one SSE URL in one process, and its driver.

Run as its own process (``python -m bench.sse_load URL --connections N --expect K ...``): it
opens N raw HTTP/1.1 connections on uvloop (no HTTP client library: one ``data_received``
callback per read, so that it is not the bottleneck), writes a status file once every one got
its ``200`` headers, then times every ``tool.call`` whose title is ``bench-<time_ns at
append>`` against its arrival, and writes the results file when every connection got K such
events, when the stop file appears, or at the deadline.

The parent uses :class:`LoadGen` to start one and read what it measured.
"""

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from bench.harness import Bench

MARKER = b'"title":"bench-'
RECONNECT = b"event: reconnect"
CONNECT_TIMEOUT_S = 30.0


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def bench_title() -> str:
    """The title that carries the append time: ``bench-<time.time_ns()>``."""
    return f"bench-{time.time_ns()}"


@dataclass
class Tally:
    """Everything the subscribers saw, keyed by the append time of each event."""

    expect: int
    latencies: dict[int, list[int]] = field(default_factory=dict)  # sent ns -> [latency us]
    received: int = 0
    first_ns: int = 0
    last_ns: int = 0
    reconnects: int = 0
    dropped: int = 0
    complete: int = 0
    all_complete: asyncio.Event = field(default_factory=asyncio.Event)
    connected: int = 0

    def record(self, sent_ns: int, now_ns: int) -> None:
        self.latencies.setdefault(sent_ns, []).append((now_ns - sent_ns) // 1000)
        self.received += 1
        self.first_ns = self.first_ns or now_ns
        self.last_ns = now_ns

    def completed_one(self) -> None:
        self.complete += 1
        if self.connected and self.complete >= self.connected:
            self.all_complete.set()


class SseClient(asyncio.Protocol):
    """One subscriber: sends the GET, checks the status line, counts and times the events."""

    def __init__(self, request: bytes, tally: Tally) -> None:
        self.request = request
        self.tally = tally
        self.headers: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buf = self.buffer + data
        if not self.headers.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if not buf.startswith(b"HTTP/1.1 200"):
                self.headers.set_exception(RuntimeError(buf[:end].decode(errors="replace")))
                return
            self.headers.set_result(None)
            buf = buf[end + 4 :]
        cut = buf.rfind(b"\n") + 1  # whole lines (\n or \r\n) now, the partial tail later
        if not cut:
            self.buffer = buf
            return
        self.buffer = buf[cut:]
        self._frames(buf[:cut], now)

    def _frames(self, chunk: bytes, now: int) -> None:
        before = self.count
        pos = chunk.find(MARKER)
        while pos >= 0:
            start = pos + len(MARKER)
            end = chunk.find(b'"', start)
            self.tally.record(int(chunk[start:end]), now)
            self.count += 1
            pos = chunk.find(MARKER, end)
        if RECONNECT in chunk:
            self.tally.reconnects += 1
        if before < self.tally.expect <= self.count:
            self.tally.completed_one()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.headers.done():
            self.headers.set_exception(ConnectionError(f"closed before headers: {exc}"))
        elif self.count < self.tally.expect:
            self.tally.dropped += 1


def request_bytes(url: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    head = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
    return host, port, head.encode()


async def open_all(
    url: str, n: int, concurrency: int, tally: Tally
) -> tuple[list[SseClient], list[str]]:
    host, port, request = request_bytes(url)
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> SseClient:
        async with gate:
            _, client = await loop.create_connection(lambda: SseClient(request, tally), host, port)
            await asyncio.wait_for(client.headers, CONNECT_TIMEOUT_S)
            return client

    results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    clients = [r for r in results if isinstance(r, SseClient)]
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    return clients, errors


async def wait_done(tally: Tally, stop: Path, deadline: float) -> str:
    while time.monotonic() < deadline:
        if tally.all_complete.is_set():
            return "complete"
        if await asyncio.to_thread(stop.exists):
            return "stopped"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.all_complete.wait(), 0.1)
    return "complete" if tally.all_complete.is_set() else "timeout"


def write_json(path: Path, data: dict[str, Any]) -> None:
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(data))
    scratch.replace(path)  # the parent never reads half a file


async def main_async(args: argparse.Namespace) -> None:
    tally = Tally(expect=args.expect)
    started = time.monotonic()
    clients, errors = await open_all(args.url, args.connections, args.concurrency, tally)
    tally.connected = len(clients)
    if tally.complete >= tally.connected:
        tally.all_complete.set()
    status = {"connected": len(clients), "failed": len(errors), "errors": errors[:5]}
    write_json(args.status, {**status, "connect_s": time.monotonic() - started})
    cpu0, wall0 = time.process_time(), time.monotonic()
    outcome = await wait_done(tally, args.stop, wall0 + args.timeout)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    for client in clients:
        if client.transport is not None:
            client.transport.abort()
    result = {
        **status,
        "outcome": outcome,
        "complete": tally.complete,
        "received": tally.received,
        "first_ns": tally.first_ns,
        "last_ns": tally.last_ns,
        "reconnects": tally.reconnects,
        "dropped": tally.dropped,
        "cpu_s": cpu,
        "wall_s": wall,
        "latencies_us": {str(k): v for k, v in tally.latencies.items()},
    }
    write_json(args.out, result)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.sse_load", description=__doc__)
    p.add_argument("url", help="the SSE URL, http://127.0.0.1:PORT/...")
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--expect", type=int, required=True, help="bench events per connection")
    p.add_argument("--timeout", type=float, required=True, help="seconds after connecting")
    p.add_argument("--concurrency", type=int, default=256, help="connections opening at once")
    p.add_argument("--status", type=Path, required=True, help="written once connected")
    p.add_argument("--out", type=Path, required=True, help="the results JSON")
    p.add_argument("--stop", type=Path, required=True, help="stop early once this exists")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import uvloop

    args = parse_args(argv)
    raise_nofile()
    uvloop.run(main_async(args))
    return 0


# --- the parent's side ---------------------------------------------------------------


@dataclass
class LoadResult:
    connected: int
    failed: int
    complete: int
    received: int
    first_ns: int
    last_ns: int
    reconnects: int
    dropped: int
    cpu_s: float
    wall_s: float
    outcome: str
    latencies_us: dict[int, list[int]]

    @classmethod
    def load(cls, raw: dict[str, Any]) -> "LoadResult":
        names = {f for f in cls.__dataclass_fields__ if f != "latencies_us"}
        lat = {int(k): v for k, v in raw["latencies_us"].items()}
        return cls(**{k: raw[k] for k in names}, latencies_us=lat)

    def all_latencies(self) -> list[int]:
        return [x for values in self.latencies_us.values() for x in values]


class LoadGen:
    """One load-generator process, driven through files in the bench's work folder."""

    def __init__(self, b: Bench, url: str, connections: int, expect: int, timeout: float) -> None:
        folder = b.workdir / f"load-{time.monotonic_ns()}"
        folder.mkdir(parents=True)
        self.status, self.out, self.stop_file = (folder / n for n in ("status", "out", "stop"))
        self.connections = connections
        args = [sys.executable, "-m", "bench.sse_load", url, "--connections", str(connections)]
        args += ["--expect", str(expect), "--timeout", str(timeout), "--status", str(self.status)]
        args += ["--out", str(self.out), "--stop", str(self.stop_file)]
        self.timeout = timeout
        self.proc = b.process(args)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_connected(self, timeout: float) -> dict[str, Any]:
        """The status once every connection is open; raises if some failed."""
        status = self._wait_file(self.status, timeout)
        if status["connected"] != self.connections:
            raise RuntimeError(f"load generator connected {status['connected']}: {status}")
        return status

    def stop(self) -> None:
        self.stop_file.touch()

    def result(self, timeout: float | None = None) -> LoadResult:
        return LoadResult.load(self._wait_file(self.out, timeout or self.timeout + 30))

    def _wait_file(self, path: Path, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.proc.poll() is not None and not path.exists():
                raise RuntimeError(f"load generator exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {path.name} from the load generator in {timeout} s")
            time.sleep(0.05)
        data: dict[str, Any] = json.loads(path.read_text())
        return data


def until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    """Poll ``check`` until it holds; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(every)


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


if __name__ == "__main__":
    sys.exit(main())
