"""Capacity: 10,000 concurrent SSE subscribers on one server process, and what each costs.

Per run, a fresh ``orchestrator serve`` process: one ``bench.sse_load`` process opens 1,000
subscribers of one workspace (RSS read), a second opens the other 9,000 (RSS read again),
then a few events are appended through ``POST /log``, each carrying its append time, and every
subscriber's receipt of every one is timed.
"""

import os
import time
from dataclasses import dataclass

import httpx

from bench.fanout import POOL, connections_named, debug_caches, warm_up
from bench.harness import Bench, Figure, median, percentile
from bench.sse_load import LoadGen, LoadResult, bench_title, raise_nofile, rss_kb, until

TITLE = "Capacity: 10,000 concurrent SSE subscribers on one server process"
CALL = {"tool": "bench.capacity", "sessionID": "s1", "agentName": "bench", "status": "ok"}
# What profiling found (py-spy --native, tracemalloc), for figures that fall short.
LATENCY_BOUND = (
    "What bounds it: py-spy --native on the server during a broadcast shows ~57% of its CPU in "
    "gc_collect_main. 10,000 clients keep ~1.85 M GC-tracked objects (~185 each), and the "
    "allocations of one wake-up per client (an anyio cancel scope and timer per wait in "
    "Subscriber.next, the ASGI message dicts) set off full collections of ~1.4 s; the rest is "
    "~45 us per client wake-up (that cancel scope, the send chain, one write syscall)."
)
MEMORY_BOUND = (
    "What bounds it: before api/fastpath.py (tracemalloc between 1,000 and 3,000 clients, ~29 KB"
    " of Python objects a connection) ~7.5 KB were the suspended coroutines of the Starlette"
    " middleware and routing stack and ~3.5 KB the anyio task group of each stream; both are"
    " gone. What is left: uvicorn's own connection state (~6 KB), the stream's generator"
    " frames, its Subscriber and the one watcher task."
)


@dataclass
class Run:
    p50_ms: float
    p99_ms: float
    complete: int  # subscribers that received every broadcast
    rss_low_kb: int
    rss_high_kb: int
    connections: int
    connect_per_s: float
    loadgen_cpu: float


def settled_rss(pid: int) -> int:
    """RSS once it stops moving (the server finishes what the last connections started)."""
    last = rss_kb(pid)
    for _ in range(20):
        time.sleep(0.5)
        now = rss_kb(pid)
        if abs(now - last) < 256:
            return now
        last = now
    return last


def subscribe(b: Bench, url: str, n: int, expect: int, timeout: float) -> tuple[LoadGen, float]:
    """A load generator with ``n`` live subscribers; the seconds it took to connect them."""
    gen = LoadGen(b, url, n, expect=expect, timeout=timeout)
    connect_s = float(gen.wait_connected(timeout=300)["connect_s"])
    return gen, connect_s


def broadcast(client: httpx.Client, workspace_url: str, count: int, gap_s: float) -> None:
    for i in range(count):
        if i:
            time.sleep(gap_s)
        response = client.post(workspace_url + "/log", json={**CALL, "title": bench_title()})
        response.raise_for_status()


def capacity(b: Bench, client: httpx.Client, run: int) -> Run:
    low, high = b.size(1000, 20), b.size(10_000, 100)
    count, gap_s = b.size(3, 1), b.size(3, 1)
    server = b.server()
    assert server.process is not None
    pid, workspace_url = server.process.pid, server.workspace_url(f"capacity-{run}")
    url = f"{workspace_url}/events?since_seq={warm_up(client, workspace_url)}"

    def registered(n: int) -> None:
        def check() -> bool:
            feed = debug_caches(client, workspace_url).get("feed") or {}
            return int(feed.get("subscribers", {}).get("events", 0)) >= n

        until(check, 120, f"{n} subscribers registered", every=0.25)

    timeout = count * gap_s + 60
    first, _ = subscribe(b, url, low, count, timeout + 300)
    registered(low)
    rss_low = settled_rss(pid)
    rest, connect_s = subscribe(b, url, high - low, count, timeout)
    registered(high)
    rss_high = settled_rss(pid)
    replica = str(debug_caches(client, workspace_url)["replica"])
    conns = connections_named(b, lambda name: name.endswith(":" + replica))
    broadcast(client, workspace_url, count, gap_s)
    results = [first.result(), rest.result()]
    server.stop()
    return summarize(results, rss_low, rss_high, conns, (high - low) / connect_s)


def summarize(
    results: list[LoadResult], rss_low: int, rss_high: int, conns: int, connect_per_s: float
) -> Run:
    latencies = [float(x) for r in results for x in r.all_latencies()]
    return Run(
        p50_ms=percentile(latencies, 50) / 1000,
        p99_ms=percentile(latencies, 99) / 1000,
        complete=sum(r.complete for r in results),
        rss_low_kb=rss_low,
        rss_high_kb=rss_high,
        connections=conns,
        connect_per_s=connect_per_s,
        loadgen_cpu=max(r.cpu_s / max(r.wall_s, 1e-9) for r in results),
    )


def setup_note(b: Bench, runs: list[Run]) -> str:
    high, count = b.size(10_000, 100), b.size(3, 1)
    return (
        f"{high:,} subscribers of one workspace on one server process, {count} broadcasts per "
        f"run {b.size(3, 1)} s apart (POST /log, one tool call each), timed from just before "
        f"the POST to receipt; medians of {len(runs)} runs, a fresh server each. Load "
        "generator: two bench.sse_load processes (raw asyncio sockets on uvloop; busiest at "
        f"{median([r.loadgen_cpu for r in runs]):.0%} of a core over the run). 2 cores shared "
        "by server, load generators and Redis (and other tenants: load average "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())})."
    )


def latency_figures(b: Bench, runs: list[Run]) -> list[Figure]:
    high, p99 = b.size(10_000, 100), median([r.p99_ms for r in runs])
    complete = min(r.complete for r in runs)
    return [
        Figure(
            "capacity",
            f"p99 broadcast delivery ({high:,} subscribers)",
            p99,
            "ms",
            target="<= 1000 ms",
            met=p99 <= 1000,
            note=setup_note(b, runs) + ("" if p99 <= 1000 else " " + LATENCY_BOUND),
        ),
        Figure("capacity", "p50 broadcast delivery", median([r.p50_ms for r in runs]), "ms"),
        Figure(
            "capacity",
            "subscribers that received every broadcast",
            complete,
            "subscribers",
            target=f"= {high:,}",
            met=complete == high,
            note="worst run",
        ),
    ]


def memory_figures(b: Bench, runs: list[Run]) -> list[Figure]:
    low, high = b.size(1000, 20), b.size(10_000, 100)
    per_conn = median([(r.rss_high_kb - r.rss_low_kb) / (high - low) for r in runs])
    rss = median([r.rss_high_kb for r in runs]) / 1024
    note = (
        f"VmRSS growth from {low:,} to {high:,} idle subscribers / {high - low:,} (socket "
        f"buffers are kernel memory, not counted); RSS at {high:,}: {rss:.0f} MiB."
    )
    return [
        Figure(
            "capacity",
            "server memory per connection",
            per_conn,
            "KB",
            target="<= 16 KB",
            met=per_conn <= 16,
            note=note + ("" if per_conn <= 16 else " " + MEMORY_BOUND),
        ),
    ]


def connection_figures(b: Bench, runs: list[Run]) -> list[Figure]:
    low, high = b.size(1000, 20), b.size(10_000, 100)
    conns = max(r.connections for r in runs)
    return [
        Figure(
            "capacity",
            f"Redis connections per replica ({high:,} subscribers)",
            conns,
            "connections",
            target=f"<= {1 + POOL} (1 active workspace + pool of {POOL})",
            met=conns <= 1 + POOL,
            note="CLIENT LIST, connections named orch-api:/orch-feed:<replica>",
        ),
        Figure(
            "capacity",
            "subscribe rate",
            median([r.connect_per_s for r in runs]),
            "connections/s",
            note=f"opening the last {high - low:,}, 256 at a time, with {low:,} already live",
        ),
    ]


def run(b: Bench) -> list[Figure]:
    raise_nofile()  # the servers and load generators inherit it
    with httpx.Client(timeout=30) as client:
        runs = [capacity(b, client, i) for i in range(b.runs)]
    return latency_figures(b, runs) + memory_figures(b, runs) + connection_figures(b, runs)
