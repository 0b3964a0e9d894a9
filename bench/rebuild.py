"""Workload 7: rebuild every read model from the log (``orchestrator rebuild WORKSPACE``).

The log is a workspace's history: of every 20 events, 17 tool calls, a question asked, its
answer and a config update. Each run drops the read models and rebuilds them with
``Projector.rebuild``, the code ``orchestrator rebuild`` runs, in this process (no server).
The baseline is reading the same log with a raw ``XRANGE`` loop in Python (redis-py, batches
of 1000, as the projector reads it): what a rebuild would cost if writing the read models
were free. The CPU each side used (Redis from ``INFO cpu``, the projector from
``process_time``) says which one bounds the rate.
"""

import asyncio
import os
import time
from dataclasses import dataclass

from bench.fill import append, mixed_events
from bench.harness import Bench, Figure, median
from bench.replay import xrange_reader
from orchestrator.connection import connect
from orchestrator.eventlog import EventLog
from projections.runner import Projector

TITLE = "Read-model rebuild from the log"
WORKSPACE = "ws_rebuild"
TARGET = 50_000.0  # events/s


@dataclass(frozen=True)
class Rebuilt:
    rate: float  # events/s
    redis_cpu_s: float
    projector_cpu_s: float
    seconds: float


def redis_cpu(b: Bench) -> float:
    """CPU seconds the bench Redis has used so far."""
    client = b.client()
    info = client.info("cpu")
    client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def rebuild_all(redis_url: str) -> int:
    async with connect(redis_url) as client:
        projector = Projector(EventLog(client, retention=0, idempotency_ttl_ms=60_000))
        return await projector.rebuild(WORKSPACE)


def rebuild_once(b: Bench, events: int) -> Rebuilt:
    redis_before, cpu_before = redis_cpu(b), time.process_time()
    started = time.perf_counter()
    reached = asyncio.run(rebuild_all(b.redis_url))
    seconds = time.perf_counter() - started
    redis_used, cpu_used = redis_cpu(b) - redis_before, time.process_time() - cpu_before
    if reached != events:
        raise RuntimeError(f"rebuilt up to seq {reached}, expected {events}")
    return Rebuilt(events / seconds, redis_used, cpu_used, seconds)


def run(b: Bench) -> list[Figure]:
    events = b.size(200_000, 2_000)
    append_rate = append(b.redis_url, WORKSPACE, mixed_events(WORKSPACE, events))
    reads, rebuilds = [], []
    for _ in range(b.runs):
        reads.append(events / xrange_reader(b.redis_url, WORKSPACE, events))
        rebuilds.append(rebuild_once(b, events))
    value = median([r.rate for r in rebuilds])
    typical = sorted(rebuilds, key=lambda r: r.rate)[len(rebuilds) // 2]
    return [
        Figure(
            "rebuild",
            f"rebuild of every read model from {events:,} events (85% tool calls)",
            value,
            "events/s",
            baseline="raw XRANGE read of the same log in Python (redis-py, batches of 1000)",
            baseline_value=median(reads),
            target=f">= {TARGET:,.0f} events/s",
            met=value >= TARGET,
            note=note(typical, events, append_rate, b.runs),
        )
    ]


def note(r: Rebuilt, events: int, append_rate: float, runs: int) -> str:
    redis_us, python_us = r.redis_cpu_s / events * 1e6, r.projector_cpu_s / events * 1e6
    text = (
        f"median of {runs} runs; Projector.rebuild in the bench process, no server; log"
        f" appended by EventLog.append at {append_rate:,.0f} events/s. CPU per event: Redis"
        f" {redis_us:.1f} us, projector (Python) {python_us:.1f} us, over {r.seconds:.1f} s"
        " wall. The projector pipelines: it reads the next batch and computes its writes while"
        " Redis applies the last, so with a core free for each the rate approaches"
        " 1 / max(Redis, Python), and with none free (other tenants) 1 / (their sum); load"
        f" average at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}."
    )
    if r.rate < TARGET:
        text += (
            " What bounds it: Redis's share is the log's index layout: each tool call adds ~10"
            " sorted-set entries (all, tool, status, status+tool, session, agent, entry,"
            " container), a callID hash field and, because most entryIDs in this log are new,"
            " ~0.8 new keys, each also registered in log:indexes; decoding the batch's writes"
            " (cmsgpack, ~600 KB per 1,000 events) is ~4 us of it. Python's: decoding the"
            " XRANGE reply into events, the log's index keys and merged commands per call"
            " (LogProjection.apply_batch), and msgpack-encoding them."
        )
    return text
