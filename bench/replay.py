"""Workload 5: ``GET /events?since_seq=0`` replays a 1,000,000-event log to one SSE client.

The client is another process (``python -m bench.replay sse ...``) on loopback: a plain
socket that counts frames (each ends with a blank line; JSON data holds no raw newline) until
the frame with the last seq arrives, so it costs almost nothing per event. The baseline, the
floor for any Python server, is a raw ``XRANGE`` reader (redis-py, batches of 1000, the
server's replay batch) on the same Redis, also in its own process.
"""

import importlib.util
import json
import socket
import sys
import time
from pathlib import Path

import redis

from bench.fill import append, tool_call_events
from bench.harness import Bench, Figure, median
from orchestrator.keys import WorkspaceKeys
from orchestrator.replies import as_bytes

TITLE = "Replay: since_seq=0 over 1,000,000 events to one SSE client"
WORKSPACE = "ws_replay"
TARGET = 200_000.0  # events/s
BATCH = 1000
RECV = 1 << 20


def sse_client(host: str, port: int, path: str, events: int, deadline_s: float) -> float:
    """Seconds from sending the request to receiving ``events`` frames after ``retry:``."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    last_id = b"id: %d\n" % events
    with socket.create_connection((host, port), timeout=deadline_s) as sock:
        started = time.perf_counter()
        sock.sendall(request.encode())
        blanks, tail, seen_last = 0, b"", False
        # Frames end with "\n\n": counted across reads (a read may split one), chunk framing
        # (``\r\n<hex>\r\n`` between whole frames) adds none.
        while blanks < events + 1:  # +1: the ``retry:`` frame first
            data = sock.recv(RECV)
            if not data:
                raise RuntimeError(f"stream ended after {blanks - 1} of {events} events")
            joined = tail + data
            blanks += joined.count(b"\n\n") - tail.count(b"\n\n")
            seen_last = seen_last or last_id in joined
            tail = joined[-16:]
            if time.perf_counter() - started > deadline_s:
                raise TimeoutError(f"{blanks - 1} of {events} events in {deadline_s} s")
        elapsed = time.perf_counter() - started
    if not seen_last:
        raise RuntimeError(f"counted {events} frames but never saw seq {events}")
    return elapsed


def xrange_reader(redis_url: str, workspace: str, events: int) -> float:
    """Seconds to read every event with XRANGE in batches, as the replay does (the floor)."""
    stream = WorkspaceKeys(workspace).events
    client = redis.Redis.from_url(redis_url)
    started = time.perf_counter()
    position, read = 0, 0
    while True:
        entries = client.xrange(stream, min=f"{position + 1}-0", count=BATCH)
        if not entries:
            break
        read += len(entries)
        position = int(as_bytes(entries[-1][0]).split(b"-", 1)[0])
    elapsed = time.perf_counter() - started
    client.close()
    if read != events:
        raise RuntimeError(f"read {read} of {events} events")
    return elapsed


def measure(b: Bench, mode: str, target: str, events: int, out: Path) -> float:
    """Run one reader in its own process; its rate in events/s."""
    args = [sys.executable, "-m", "bench.replay", mode, target, str(events), str(out)]
    timeout = 30 + events / 20_000
    proc = b.process(args)
    if proc.wait(timeout) != 0:
        raise RuntimeError(f"{mode} reader failed (exit {proc.returncode}); see {b.workdir}")
    seconds = float(json.loads(out.read_text())["seconds"])
    return events / seconds


def run(b: Bench) -> list[Figure]:
    events = b.size(1_000_000, 2_000)
    fill_rate = append(b.redis_url, WORKSPACE, tool_call_events(WORKSPACE, events))
    server = b.server()
    url = f"{server.workspace_url(WORKSPACE)}/events?since_seq=0"
    floor, replay = [], []
    for i in range(b.runs):
        floor.append(measure(b, "xrange", b.redis_url, events, b.workdir / f"xrange-{i}.json"))
        replay.append(measure(b, "sse", url, events, b.workdir / f"sse-{i}.json"))
    value = median(replay)
    return [
        Figure(
            "replay",
            f"since_seq=0 replay of {events:,} events, one client",
            value,
            "events/s",
            baseline="raw XRANGE reader in Python (redis-py, batches of 1000), same Redis",
            baseline_value=median(floor),
            target=f">= {TARGET:,.0f} events/s",
            met=value >= TARGET,
            note=note(value, median(floor), fill_rate, b.runs),
        )
    ]


def resp_parser() -> str:
    found = importlib.util.find_spec("hiredis") is not None
    return "hiredis" if found else "redis-py's pure-Python parser (hiredis absent)"


def note(value: float, floor: float, fill_rate: float, runs: int) -> str:
    text = (
        f"median of {runs} runs; client: a raw-socket frame counter in its own process; "
        f"log filled by EventLog.append at {fill_rate:,.0f} events/s; RESP: {resp_parser()};"
        " 2 cores shared by client, server and Redis."
    )
    if value < TARGET:
        text += (
            " Bound by the server's Python work per event: redis-py's XRANGE reply callback"
            " builds a dict per entry, EventLog.read a StoredEvent per entry, and sse.py a"
            f" frame per event; the floor (reading alone) reaches {floor:,.0f} events/s."
        )
    return text


def main(argv: list[str]) -> int:
    mode, target, events, out = argv[0], argv[1], int(argv[2]), Path(argv[3])
    if mode == "sse":
        rest = target.removeprefix("http://")
        address, _, path = rest.partition("/")
        host, _, port = address.partition(":")
        seconds = sse_client(host, int(port), "/" + path, events, 30 + events / 20_000)
    else:
        seconds = xrange_reader(target, WORKSPACE, events)
    out.write_text(json.dumps({"events": events, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
