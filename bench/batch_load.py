"""Load generator for the batch-ingestion workload, run as its own process.

``python -m bench.batch_load --base URL --workspaces a,b --requests N --out result.json``
posts ``N`` bodies of ``--batch`` tool calls each to ``POST /log`` over ``--connections``
keep-alive connections (one aiohttp session, uvloop), one worker coroutine per connection.
Worker ``k`` writes to workspace ``k mod len(workspaces)``. Bodies are encoded before the
clock starts, so the generator spends its CPU on HTTP only. The result (JSON) holds the
calls acknowledged, the wall time, and each request's latency.
"""

import argparse
import asyncio
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import msgspec
import uvloop

LOG_PATH = "/api/v1/workspaces/{ws}/orchestration/log"


def tool_call(run: str, request: int, index: int) -> dict[str, object]:
    """One tool call as an agent posts it: every required field and the common optional ones."""
    return {
        "tool": ("fs.read", "fs.write", "shell.exec", "search.grep")[index % 4],
        "sessionID": f"ses_{run}_{request % 8}",
        "agentName": ("build-agent", "review-agent")[index % 2],
        "status": "ok" if index % 10 else "error",
        "callID": f"call_{run}_{request:06d}_{index:04d}",
        "title": "read a file of the repository",
        "target": f"src/module_{index % 50}/file_{index}.py",
        "timestamp": 1_700_000_000_000 + request * 1000 + index,
        "duration": 12 + index % 90,
    }


def body(run: str, request: int, batch: int) -> bytes:
    items = [tool_call(run, request, i) for i in range(batch)]
    return msgspec.json.encode({"items": items})


@dataclass
class Result:
    requests: int = 0
    calls: int = 0
    errors: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU time while timed
    cpu_total_seconds: float = 0.0  # and in all (bodies encoded, warm-up)
    latencies_ms: list[float] = field(default_factory=list)
    first_error: str = ""

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


async def post(
    session: aiohttp.ClientSession, url: str, payload: bytes, batch: int, result: Result
) -> None:
    started = time.perf_counter()
    headers = {"content-type": "application/json"}
    async with session.post(url, data=payload, headers=headers) as response:
        reply = await response.read()
    result.latencies_ms.append((time.perf_counter() - started) * 1000)
    result.requests += 1
    if response.status == 201 and len(msgspec.json.decode(reply)["items"]) == batch:
        result.calls += batch
    else:
        result.errors += 1
        result.first_error = result.first_error or f"{response.status}: {reply[:300]!r}"


async def worker(
    session: aiohttp.ClientSession,
    url: str,
    bodies: list[bytes],
    order: "itertools.count[int]",
    batch: int,
    result: Result,
) -> None:
    while (i := next(order)) < len(bodies):
        await post(session, url, bodies[i], batch, result)


async def load(args: argparse.Namespace) -> Result:
    workspaces = args.workspaces.split(",")
    bodies = [body(args.run, i, args.batch) for i in range(args.warmup + args.requests)]
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(args.base, connector=connector, timeout=timeout) as session:
        urls = [
            LOG_PATH.format(ws=workspaces[k % len(workspaces)]) for k in range(args.connections)
        ]
        warm = Result()
        await run_all(session, urls, bodies[: args.warmup], args.batch, warm)
        result = Result()
        started, cpu = time.perf_counter(), time.process_time()
        await run_all(session, urls, bodies[args.warmup :], args.batch, result)
        result.seconds = time.perf_counter() - started
        result.cpu_seconds = time.process_time() - cpu
        result.errors += warm.errors
        result.first_error = warm.first_error or result.first_error
    return result


async def run_all(
    session: aiohttp.ClientSession, urls: list[str], bodies: list[bytes], batch: int, result: Result
) -> None:
    order = itertools.count()
    await asyncio.gather(*(worker(session, url, bodies, order, batch, result) for url in urls))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.batch_load", description=__doc__)
    p.add_argument("--base", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--workspaces", required=True, help="comma-separated workspace ids")
    p.add_argument("--requests", type=int, required=True, help="timed requests")
    p.add_argument("--warmup", type=int, default=0, help="untimed requests first")
    p.add_argument("--batch", type=int, default=1000, help="tool calls per request")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--run", default="r0", help="tag that makes call and session ids unique")
    p.add_argument("--out", type=Path, required=True, help="where the result JSON goes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = uvloop.run(load(args))
    result.cpu_total_seconds = time.process_time()
    report = {**asdict(result), "calls_per_s": result.calls_per_s}
    args.out.write_text(json.dumps(report))
    return 0 if result.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
