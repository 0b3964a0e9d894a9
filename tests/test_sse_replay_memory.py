"""A replay is sent in batches bounded in bytes as well as in events.

Clients that ask for a replay of a log of large events and then do not read must not make
the server hold more than about one batch each (1,000 events of a few hundred KB each used
to be held per client), and what they cost is given back once they are gone. Whatever the
batches' sizes, a replay is still every event once, in order.
"""

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from redis.asyncio import Redis

from orchestrator.eventlog import EventLog
from orchestrator.events import NewEvent
from orchestrator.keys import WorkspaceKeys
from tests.faults_clients import rss_kb
from tests.servers import HOST, ServerProcess
from tests.sse_client import RawEventStream, events, open_stream

LARGE = 256 * 1024  # bytes of one large event's payload
LARGE_EVENTS = 400  # a log of ~100 MB
CLIENTS = 6
MB = 1024


def payload(size: int, seq: int) -> bytes:
    return b'{"n":%d,"blob":"%s"}' % (seq, b"x" * size)


@pytest.fixture
def large_log(redis_url: str, workspace: str) -> Iterator[Callable[[list[int]], None]]:
    """Fills the workspace's log with events of the given sizes; drops it afterwards, so
    that the suite's Redis does not keep its ~100 MB."""
    yield lambda sizes: asyncio.run(fill(redis_url, workspace, sizes))
    asyncio.run(drop(redis_url, workspace))


async def drop(redis_url: str, workspace: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        await redis.delete(WorkspaceKeys(workspace).events)
    finally:
        await redis.aclose()


async def fill(redis_url: str, workspace: str, sizes: list[int]) -> None:
    """Append one event of each size, straight to the log (so that no projection of them
    runs in the server under test)."""
    redis = Redis.from_url(redis_url)
    try:
        log = EventLog(redis, retention=0, idempotency_ttl_ms=60_000)
        for seq, size in enumerate(sizes, 1):
            await log.append(workspace, [NewEvent("test.blob", payload(size, seq))])
    finally:
        await redis.aclose()


def wait_for_count(api: httpx.Client, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (seen := api.get("/events/connections").json()) != {"count": count}:
        assert time.monotonic() < deadline, f"connections stayed {seen}, expected {count}"
        time.sleep(0.1)


def settled_rss_kb(pid: int, timeout: float = 20.0) -> int:
    """The server's RSS once it stops changing by more than a MB a second (or after
    ``timeout``): the reads the clients set off are done."""
    readings = [rss_kb(pid)]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.25)
        readings.append(rss_kb(pid))
        window = readings[-5:]
        if len(window) == 5 and max(window) - min(window) < MB:
            break
    return max(readings[-5:])


def test_clients_that_do_not_read_a_replay_hold_about_one_batch_each(
    make_server: Callable[..., ServerProcess],
    large_log: Callable[[list[int]], None],
    workspace: str,
) -> None:
    large_log([LARGE] * LARGE_EVENTS)
    log_mb = LARGE * LARGE_EVENTS / 2**20
    server = make_server()
    assert server.process is not None
    pid = server.process.pid
    url = server.workspace_url(workspace)
    path = urlsplit(url).path + "/events?since_seq=0"
    with httpx.Client(base_url=url, timeout=10) as api:
        wait_for_count(api, 0)
        baseline = settled_rss_kb(pid)
        with ExitStack() as stack:
            for _ in range(CLIENTS):
                stack.enter_context(RawEventStream(HOST, server.port, path))
            wait_for_count(api, CLIENTS)
            held = settled_rss_kb(pid)
        wait_for_count(api, 0)
        after = settled_rss_kb(pid)
    held_mb, after_mb = (held - baseline) / MB, (after - baseline) / MB
    print(
        f"RSS baseline {baseline // MB} MB; {CLIENTS} clients not reading a {log_mb:.0f} MB "
        f"replay: +{held_mb:.1f} MB; after they closed: +{after_mb:.1f} MB"
    )
    # Each used to hold a whole batch of 1,000 events: here, the whole log. Now each holds
    # about two batches of ORCH_REPLAY_BATCH_BYTES (1 MiB): one in its socket's buffer, one
    # waiting to be written.
    assert held_mb < log_mb / 2, f"{CLIENTS} clients not reading held {held_mb:.0f} MB"
    assert after_mb < log_mb / 3, f"{after_mb:.0f} MB still held after the clients closed"


def test_a_replay_of_small_and_large_events_is_every_event_once_in_order(
    make_server: Callable[..., ServerProcess],
    large_log: Callable[[list[int]], None],
    workspace: str,
) -> None:
    # Runs of small and large events, so that batches are cut at the byte budget, and the
    # reads grow again after it.
    sizes = [10] * 1500 + [LARGE] * 20 + [10] * 3000 + [LARGE * 4] * 3 + [10] * 50
    large_log(sizes)
    server = make_server(ORCH_REPLAY_BATCH_BYTES=str(LARGE * 2))
    with (
        httpx.Client(base_url=server.workspace_url(workspace), timeout=10) as api,
        open_stream(api, "/events", since_seq=0) as stream,
    ):
        frames = events(stream.until_seq(len(sizes), timeout=30))
    assert [f.seq for f in frames] == list(range(1, len(sizes) + 1))
    assert [len(f.json()["payload"]["blob"]) for f in frames] == sizes


def peak_rss_kb(pid: int) -> int:
    """A process's peak resident set size since it started or ``reset_peak_rss``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


SMALL_THEN_LARGE = [10] * 1100 + [900 * 1024] * 400  # a log of ~350 MB


@pytest.mark.timeout(120)
def test_a_run_of_large_events_after_small_ones_is_not_read_all_at_once(
    make_server: Callable[..., ServerProcess],
    large_log: Callable[[list[int]], None],
    workspace: str,
) -> None:
    # The reads grow while the events are small: the read that meets the large ones must not
    # fetch hundreds of them (each up to ~1 MB) only to send one.
    large_log(SMALL_THEN_LARGE)
    log_mb = sum(SMALL_THEN_LARGE) / 2**20
    server = make_server()
    assert server.process is not None
    pid = server.process.pid
    with httpx.Client(base_url=server.workspace_url(workspace), timeout=30) as api:
        wait_for_count(api, 0)
        baseline = settled_rss_kb(pid)
        reset_peak_rss(pid)
        with open_stream(api, "/events", since_seq=0) as stream:
            frames = events(stream.until_seq(len(SMALL_THEN_LARGE), timeout=90))
        peak = peak_rss_kb(pid)
    assert [f.seq for f in frames] == list(range(1, len(SMALL_THEN_LARGE) + 1))
    growth_mb = (peak - baseline) / MB
    print(f"RSS baseline {baseline // MB} MB; replay of {log_mb:.0f} MB: peak +{growth_mb:.0f} MB")
    # The log's large events, if read in one go, are ~350 MB: a peak well under that is
    # reads bounded in size (a few tens of MB at most).
    assert growth_mb < 200, f"the replay's peak RSS grew by {growth_mb:.0f} MB"
