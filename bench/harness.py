"""What every workload shares: the Redis and servers it runs against, sizes, and figures."""

import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis as SyncRedis

from orchestrator.redis_server import RedisServer, find_redis_server
from tests.servers import ServerProcess, free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Figure:
    """One measured figure, with the baseline it is compared to and the target it aims at."""

    workload: str
    metric: str
    value: float
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    target: str = ""  # e.g. ">= 0.6x", "<= 50 ms"
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline_value in (None, 0):
            return None
        assert self.baseline_value is not None
        return self.value / self.baseline_value

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class Bench:
    """A benchmark run: a scratch folder, a private Redis, servers started on demand."""

    workdir: Path
    smoke: bool
    runs: int = 3
    redis: RedisServer = field(init=False)
    _servers: list[ServerProcess] = field(default_factory=list)
    _extra: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(self.workdir / "redis", appendonly=False)
        self.redis.start()

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def client(self) -> SyncRedis:
        return SyncRedis.from_url(self.redis_url)

    def size(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full

    def server(self, **env: str) -> ServerProcess:
        """An ``orchestrator serve`` process on the bench Redis (stopped at the end)."""
        log = self.workdir / f"server-{len(self._servers)}.log"
        process = ServerProcess(self.redis_url, log, ORCH_HEARTBEAT_S="15", **env)
        self._servers.append(process)
        process.start()
        return process

    def process(self, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        """Any other process (a baseline server, a load generator); ended at the end."""
        log = (self.workdir / f"proc-{len(self._extra)}.log").open("ab")
        proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=log)

        def stop() -> None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()

        self._extra.append(stop)
        return proc

    def close(self) -> None:
        for stop in reversed(self._extra):
            stop()
        for server in self._servers:
            server.stop()
        self.redis.stop()


@contextmanager
def bench(workdir: Path, smoke: bool) -> Iterator[Bench]:
    b = Bench(workdir, smoke, runs=1 if smoke else 3)
    try:
        yield b
    finally:
        b.close()


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def wait_http(url: str, timeout: float = 15) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("starlette", "uvicorn", "redis", "msgspec", "anyio", "uvloop", "httptools"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "absent"
    redis_version = subprocess.run(
        [find_redis_server(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis": redis_version,
        "wrk": shutil.which("wrk") is not None,
        "packages": versions,
    }


__all__ = ["Bench", "Figure", "bench", "free_port", "machine", "median", "percentile", "wait_http"]
