"""Faults survived, against real processes the tests start and kill (issue 5, "Faults").

Each test injects a fault while writers write and SSE clients read, then checks the log itself
(XRANGE on the test's own Redis): every write landed exactly once, and every client got every
seq exactly once, in order, across whatever reconnections the fault caused.

Covered elsewhere, and not repeated here: a projector killed between apply and checkpoint
(tests/test_projection_crash.py); a slow consumer cut off while the others keep up, and a
stalled client's count (tests/test_sse.py); an idle replica killed (tests/test_replicas.py);
a dispatcher replaced after a kill and a lease expiring without heartbeats, without load
(tests/test_executor_concurrency.py).
"""

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from orchestrator.keys import WorkspaceKeys
from orchestrator.redis_server import RedisServer
from tests.faults_clients import CALL, Follower, Writer, replica_id, rss_kb
from tests.servers import HOST, ServerProcess
from tests.sse_client import Frame, RawEventStream, events, open_stream, parse

T = TypeVar("T")
Json = dict[str, Any]
Start = Callable[..., ServerProcess]


# Fixtures: a Redis of the test's own (append-only, so that a restart keeps the log), and
# servers on it, stopped before it is.


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    # always: the test SIGKILLs it and counts acknowledged appends, which everysec may lose
    server = RedisServer(tmp_path / "redis-aof", appendonly=True, appendfsync="always")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def start(aof_redis: RedisServer, make_server: Callable[..., ServerProcess]) -> Start:
    def start_server(**env: str) -> ServerProcess:
        return make_server(aof_redis.url, **env)

    return start_server


# What the log holds, read straight from Redis.


def stored(redis_url: str, workspace: str) -> list[tuple[int, str, Json]]:
    """(seq, type, payload) of every event in the workspace's stream."""
    with redis.Redis.from_url(redis_url) as client:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(
            WorkspaceKeys(workspace).events
        )
    return [
        (int(entry_id.split(b"-")[0]), fields[b"type"].decode(), json.loads(fields[b"payload"]))
        for entry_id, fields in entries
    ]


def check_writes(log: list[tuple[int, str, Json]], writers: list[Writer]) -> int:
    """Every write answered 201 exactly once, at the seq where the log holds it, and the log
    holds each exactly once: the number of duplicates (asserted 0)."""
    for writer in writers:
        assert not writer.unexpected, writer.unexpected
    answered = {call_id: seqs for w in writers for call_id, seqs in w.seqs.items()}
    in_log = Counter(payload["callID"] for _, type_, payload in log if type_ == "tool.call")
    duplicates = sum(n - 1 for n in in_log.values())
    assert duplicates == 0, [c for c, n in in_log.items() if n > 1]
    assert set(in_log) == set(answered), "a write landed without a 201, or a 201 without a write"
    at = {payload["callID"]: seq for seq, type_, payload in log if type_ == "tool.call"}
    assert all(seqs == [at[call_id]] for call_id, seqs in answered.items())
    return duplicates


def check_follower(follower: Follower, log: list[tuple[int, str, Json]]) -> tuple[int, int]:
    """The follower got exactly the log's events of its stream, in order, up to the last it
    got: (events lost, duplicates), both asserted 0."""
    wanted = [s for s, type_, _ in log if follower.path == "/events" or type_ == "tool.call"]
    got = follower.seqs
    assert got, f"{follower.path}: nothing received"
    expected = [s for s in wanted if s <= got[-1]]
    lost = len(set(expected) - set(got))
    duplicates = len(got) - len(set(got))
    resets = [f for f in follower.control if f.event == "reset"]
    assert not resets, resets  # nothing was trimmed
    assert (lost, duplicates) == (0, 0), (follower.path, lost, duplicates)
    assert got == expected, f"{follower.path}: out of order"
    return lost, duplicates


def report(fault: str, **figures: object) -> None:
    print(f"\n[fault] {fault}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def until(check: Callable[[], T | None], timeout: float, every: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(every)
    return value


def ok(response: httpx.Response, status: int = 200) -> Json:
    assert response.status_code == status, response.text
    body: Json = response.json()
    return body


def settled(api: httpx.Client, path: str, **params: str) -> Json:
    """GET ``path``, retrying the retryable 503 (``Retry-After``) for up to 10 s."""

    def answer() -> httpx.Response | None:
        response = api.get(path, params=params)
        if response.status_code == 503:
            unavailable(response)
            return None
        return response

    return ok(until(answer, 10, every=0.1))


def unavailable(response: httpx.Response) -> None:
    """A retryable refusal: 503 UNAVAILABLE with Retry-After."""
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "UNAVAILABLE"


@contextmanager
def running(*clients: Follower | Writer) -> Iterator[None]:
    """Start the clients; stop every one of them, whatever happens."""
    try:
        for client in clients:
            client.start()
        yield
    finally:
        for client in clients:
            client.stop()


def written(writers: list[Writer]) -> int:
    return sum(w.written for w in writers)


def wait_for_writes(writers: list[Writer], more: int, timeout: float = 10) -> None:
    target = written(writers) + more
    until(lambda: written(writers) >= target, timeout)


def last_tool_call(log: list[tuple[int, str, Json]]) -> int:
    return max(s for s, type_, _ in log if type_ == "tool.call")


# 1. Redis restarts mid-stream


def test_redis_restarts_mid_stream_lose_and_duplicate_nothing(
    aof_redis: RedisServer, start: Start, workspace: str
) -> None:
    server = start()
    base = server.workspace_url(workspace)
    followers = [Follower([base], "/events"), Follower([base], "/log/stream")]
    writers = [Writer(f"w{i}", [base], requests=10_000, batch=3) for i in range(3)]
    with running(*followers, *writers):
        wait_for_writes(writers, 30)
        aof_redis.kill()  # SIGKILL: appends in flight are cut off
        aof_redis.start()
        wait_for_writes(writers, 30)
        aof_redis.stop()  # SIGTERM, down for a moment, then back
        time.sleep(0.3)
        aof_redis.start()
        wait_for_writes(writers, 30)
        for writer in writers:
            writer.stop()
        log = stored(aof_redis.url, workspace)
        followers[0].wait(log[-1][0], timeout=10)
        followers[1].wait(last_tool_call(log), timeout=10)

    assert server.process is not None
    assert server.process.poll() is None  # the server rode it out
    duplicates = check_writes(log, writers)
    with httpx.Client(base_url=base, timeout=10) as api:
        # The read model applied each event once too, restarts or not (read-your-writes).
        # A pooled connection that went stale with the restart answers one retryable 503
        # on its first use, as any request in flight would: retried like a client would.
        assert settled(api, "/log", limit="1")["meta"]["total"] == len(log)
        checkpoints = settled(api, "/debug-dump")["projections"]
        assert set(checkpoints.values()) == {len(log)}, checkpoints
    statuses = sum((w.statuses for w in writers), Counter[str]())
    assert statuses["503"] > 0, "no append was in flight during the restarts"
    assert set(statuses) <= {"201", "503"}, statuses
    figures = [check_follower(f, log) for f in followers]
    report(
        "redis restart",
        injected=2,
        events=len(log),
        writes=len(log),
        answered_503=statuses["503"],
        sse_connects=[f.connects for f in followers],
        lost=sum(lost for lost, _ in figures),
        duplicates=duplicates + sum(d for _, d in figures),
    )


# 2. An API replica SIGKILLed under load


LEASE_S = 1.0  # the dispatcher lease
WORKER_LEASE_S = 1.5
REPORT_TTL_S = 3.0  # ORCH_SUBSCRIBER_REPORT_TTL_MS on the test servers


class Heartbeats:
    """Workers renewing their leases, each through its own replica, every 0.3 s; a worker
    whose replica stops answering stops too (it died with it)."""

    def __init__(self, leases: dict[str, httpx.Client]) -> None:
        self.leases = dict(leases)
        self.stopped: set[str] = set()
        self.refused: list[str] = []  # renewals answered with an error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Heartbeats":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            for lease_id, api in self.leases.items():
                if lease_id in self.stopped:
                    continue
                try:
                    response = api.post(f"/executor/leases/{lease_id}/heartbeat")
                except httpx.TransportError:
                    self.stopped.add(lease_id)
                    continue
                if response.status_code != 200:
                    self.refused.append(f"{lease_id}: {response.status_code} {response.text}")


def claim(api: httpx.Client, session: str) -> Json:
    """A worker's claim, retried until the dispatcher has dispatched something: its lease."""

    def claimed() -> Json | None:
        response = api.post("/executor/claim", json={"sessionID": session})
        return None if response.status_code == 204 else ok(response)

    lease: Json = until(claimed, timeout=3)["lease"]
    return lease


def test_a_replica_killed_under_load_loses_nothing_and_holds_nothing(
    aof_redis: RedisServer, start: Start, workspace: str
) -> None:
    env = {
        "ORCH_DISPATCHER_LEASE_MS": str(int(LEASE_S * 1000)),
        "ORCH_WORKER_LEASE_MS": str(int(WORKER_LEASE_S * 1000)),
        "ORCH_DISPATCH_TICK_S": "0.05",
    }
    doomed = start(**env)  # started alone, so that it takes the dispatcher lease
    url_b = doomed.workspace_url(workspace)
    with ExitStack() as stack:
        api_b = stack.enter_context(httpx.Client(base_url=url_b, timeout=10))
        entries = {"one": ["src/one.py"], "two": ["src/two.py"]}
        created = ok(
            api_b.post(
                "/todo/entries",
                json={"entries": [{"content": c, "files": f} for c, f in entries.items()]},
            ),
            201,
        )
        assert len(created["entries"]) == 2
        ok(api_b.post("/executor/start"))
        holder = until(lambda: ok(api_b.get("/executor/status"))["executor"]["dispatcher"], 3)
        assert holder == replica_id(doomed)

        survivor = start(**env)
        url_a = survivor.workspace_url(workspace)
        api_a = stack.enter_context(httpx.Client(base_url=url_a, timeout=10))

        on_b = claim(api_b, "worker-on-b")  # its worker talks to the doomed replica only
        on_a = claim(api_a, "worker-on-a")
        locks = {
            lock["file"]: lock["leaseID"] for lock in ok(api_a.get("/executor/locks"))["locks"]
        }
        assert set(locks.values()) == {on_a["id"], on_b["id"]}
        heartbeats = Heartbeats({on_b["id"]: api_b, on_a["id"]: api_a})

        followers = [
            Follower([url_b, url_a], "/events"),
            Follower([url_b, url_a], "/log/stream"),
            Follower([url_a], "/events"),
        ]
        writers = [
            Writer("via-b", [url_b, url_a], requests=10_000, batch=2),
            Writer("via-a", [url_a, url_b], requests=10_000, batch=2),
        ]
        stack.enter_context(running(*followers, *writers))
        heartbeats.start()
        stack.callback(heartbeats.stop)

        until(lambda: ok(api_a.get("/events/connections"))["count"] == 2, 3)
        wait_for_writes(writers, 40)

        doomed.kill()
        killed = time.monotonic()

        # The survivor takes over dispatching within one lease period.
        until(
            lambda: (
                ok(api_a.get("/executor/status"))["executor"]["dispatcher"] == replica_id(survivor)
            ),
            LEASE_S + 2,
        )
        took_over = time.monotonic() - killed
        assert took_over < LEASE_S + 0.5, f"dispatcher taken over after {took_over:.2f} s"

        # The silent worker's lease and locks expire; the one still heartbeating keeps its.
        def expired() -> bool:
            log = stored(aof_redis.url, workspace)
            return any(t == "lease.expired" and p["leaseID"] == on_b["id"] for _, t, p in log)

        until(expired, WORKER_LEASE_S + 2)
        lease_gone = time.monotonic() - killed
        assert lease_gone < WORKER_LEASE_S + 1.0, f"worker lease expired after {lease_gone:.2f} s"
        assert heartbeats.stopped == {on_b["id"]}
        assert not heartbeats.refused, heartbeats.refused
        held = {lock["leaseID"] for lock in ok(api_a.get("/executor/locks"))["locks"]}
        assert held == {on_a["id"]}
        workers = {w["id"] for w in ok(api_a.get("/executor/workers"))["workers"]}
        assert workers == {on_a["id"]}

        # The dead replica's subscriber count expires: only the two clients now on A count.
        until(lambda: ok(api_a.get("/events/connections"))["count"] == 2, REPORT_TTL_S + 2)
        count_gone = time.monotonic() - killed
        assert count_gone < REPORT_TTL_S + 1.5
        with redis.Redis.from_url(aof_redis.url) as client:
            reports = client.hkeys(WorkspaceKeys(workspace).subscribers)
            assert replica_id(doomed).encode() not in reports

        wait_for_writes(writers, 40)  # writes go on through the survivor
        heartbeats.stop()
        ok(api_a.post(f"/executor/leases/{on_a['id']}/complete"))  # nothing left held
        for writer in writers:
            writer.stop()
        log = stored(aof_redis.url, workspace)
        for follower in followers:
            target = log[-1][0] if follower.path == "/events" else last_tool_call(log)
            follower.wait(target, timeout=10)

        assert ok(api_a.get("/executor/locks")) == {"locks": []}
        assert ok(api_a.get("/executor/workers")) == {"workers": []}
        with redis.Redis.from_url(aof_redis.url) as client:
            keys = WorkspaceKeys(workspace)
            assert client.pttl(keys.dispatcher) > 0  # held, but always with an expiry
            assert client.hlen(keys.leases) == 0

    log = stored(aof_redis.url, workspace)
    duplicates = check_writes(log, writers)
    transport = sum(n for w in writers for s, n in w.statuses.items() if not s.isdigit())
    figures = [check_follower(f, log) for f in followers]
    moved = [f.connects for f in followers[:2]]
    assert all(n >= 2 for n in moved), f"the clients of B never reconnected: {moved}"
    report(
        "replica SIGKILL",
        injected=1,
        events=len(log),
        writes_cut_off=transport,
        dispatcher_takeover_s=round(took_over, 2),
        worker_lease_expired_s=round(lease_gone, 2),
        count_expired_s=round(count_gone, 2),
        lost=sum(lost for lost, _ in figures),
        duplicates=duplicates + sum(d for _, d in figures),
    )


# 3. Redis unreachable, then back


OUTAGE_S = 2.5  # longer than the feed's longest back-off (2 s) and many dispatcher ticks


def test_redis_unreachable_is_refused_retryably_and_recovered_from(
    aof_redis: RedisServer, start: Start, workspace: str
) -> None:
    server = start(ORCH_DISPATCH_TICK_S="0.05")
    assert server.process is not None
    pid = server.process.pid
    base = server.workspace_url(workspace)
    with ExitStack() as stack:
        api = stack.enter_context(httpx.Client(base_url=base, timeout=10))
        ok(api.post("/log", json={**CALL, "callID": "call-first"}), 201)
        ok(api.post("/executor/start"))
        before = Follower([base], "/events")
        writer = Writer("through", [base], requests=10_000, pause_s=0.02)
        stack.enter_context(running(before, writer))
        wait_for_writes([writer], 10)

        aof_redis.stop()
        down = time.monotonic()
        readyz = httpx.get(server.base_url + "/readyz", timeout=5)
        assert readyz.status_code == 503
        assert readyz.json()["status"] == "unavailable"
        assert readyz.json()["redis"]  # the reason
        assert httpx.get(server.base_url + "/healthz", timeout=5).status_code == 200

        refused = {"Idempotency-Key": "during-the-outage"}
        unavailable(api.post("/log", json={**CALL, "callID": "call-outage"}, headers=refused))
        unavailable(api.patch("/config", json={"mode": "down"}))
        unavailable(api.get("/log"))
        during = Follower([base], "/log/stream")  # a client that connects during the outage
        stack.enter_context(running(during))

        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
        assert writer.statuses["503"] > 0
        aof_redis.start()
        back = time.monotonic()

        until(lambda: httpx.get(server.base_url + "/readyz").status_code == 200, 10)
        ready_in = time.monotonic() - back
        retried = api.post("/log", json={**CALL, "callID": "call-outage"}, headers=refused)
        [landed] = ok(retried, 201)["items"]
        again = api.post("/log", json={**CALL, "callID": "call-outage"}, headers=refused)
        assert ok(again, 201)["items"] == [landed]
        assert ok(api.patch("/config", json={"mode": "up"})) == {"mode": "up"}

        # The dispatcher came back too: a new entry gets dispatched.
        [entry] = ok(api.post("/todo/entries", json={"entries": [{"content": "x"}]}), 201)[
            "entries"
        ]
        until(
            lambda: ok(api.get(f"/todo/entries/{entry['id']}"))["entry"]["status"] == "dispatched",
            5,
        )
        wait_for_writes([writer], 10)
        writer.stop()
        log = stored(aof_redis.url, workspace)
        before.wait(log[-1][0], timeout=10)
        during.wait(last_tool_call(log), timeout=10)

        assert server.process is not None
        assert server.process.pid == pid
        assert server.process.poll() is None  # the same process, never restarted

        # And a server told to stop while Redis is down still stops cleanly.
        aof_redis.stop()
        process = server.process
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert "shutdown failed" not in server.log_path.read_text()
    assert [p["callID"] for _, t, p in log if t == "tool.call"].count("call-outage") == 1
    by_writer = [e for e in log if e[2].get("callID") not in ("call-first", "call-outage")]
    duplicates = check_writes(by_writer, [writer])
    figures = [check_follower(f, log) for f in (before, during)]
    report(
        "redis unreachable",
        injected=1,
        outage_s=OUTAGE_S,
        ready_again_s=round(ready_in, 2),
        answered_503=writer.statuses["503"] + 3,
        events=len(log),
        lost=sum(lost for lost, _ in figures),
        duplicates=duplicates + sum(d for _, d in figures),
    )


# 4. Graceful shutdown


def test_sigterm_ends_every_stream_and_exits_promptly(start: Start, workspace: str) -> None:
    leaving, staying = start(), start()
    url = leaving.workspace_url(workspace)
    with ExitStack() as stack:
        api = stack.enter_context(httpx.Client(base_url=url, timeout=10))
        ok(api.post("/log", json={"items": [CALL] * 5}), 201)
        streams = [
            stack.enter_context(open_stream(api, path, since_seq=0))  # each began with retry:
            for path in ("/events", "/log/stream", "/events")
        ]
        for stream in streams:
            stream.until(lambda f: f.is_heartbeat, timeout=3)  # live
        follower = Follower([url, staying.workspace_url(workspace)], "/events")
        stack.enter_context(running(follower))
        until(lambda: follower.seqs[-5:] == [1, 2, 3, 4, 5], 3)

        assert leaving.process is not None
        process = leaving.process
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        ends = [stream.to_end(timeout=10) for stream in streams]  # a clean end, not a cut
        ended = time.monotonic() - sent
        code = process.wait(timeout=10)
        exited = time.monotonic() - sent
        assert code == 0
        assert exited < 10, f"exited after {exited:.2f} s"

        for frames in ends:
            *_, last = events(frames) or [Frame()]
            assert last.event == "reconnect", frames
            data = last.json()  # on /log/stream the payload itself, else in an envelope
            assert data.get("payload", data)["reason"] == "shutdown"

        # The clients come back elsewhere and miss nothing.
        with httpx.Client(base_url=staying.workspace_url(workspace), timeout=10) as other:
            ok(other.post("/log", json={"items": [CALL] * 3}), 201)
        follower.wait(8, timeout=10)
    check_follower(follower, [(s, "tool.call", {}) for s in range(1, 9)])
    report(
        "SIGTERM",
        injected=1,
        streams_ended_s=round(ended, 2),
        exited_s=round(exited, 2),
        exit_code=code,
        lost=0,
        duplicates=0,
    )


# 5. Slow consumers do not make the server's memory grow


TITLE = "m" * 8000
SLOW_CLIENTS = 8
BATCH = 50  # events of ~8 KB per append
STEP = 20  # appends between two RSS readings: ~8 MB pushed to every client
STEPS = 6


def test_slow_consumers_do_not_grow_memory_without_bound(start: Start, workspace: str) -> None:
    server = start(ORCH_SUBSCRIBER_QUEUE="64")
    assert server.process is not None
    pid = server.process.pid
    url = server.workspace_url(workspace)

    def push(api: httpx.Client) -> None:
        for _ in range(STEP):
            ok(api.post("/log", json={"items": [{**CALL, "title": TITLE}] * BATCH}), 201)

    with ExitStack() as stack:
        api = stack.enter_context(httpx.Client(base_url=url, timeout=10))
        push(api)  # the same load once without slow clients: the baseline
        baseline = rss_kb(pid)
        since = STEP * BATCH

        path = urlsplit(url).path + f"/events?since_seq={since}"
        slow = [
            stack.enter_context(RawEventStream(HOST, server.port, path))
            for _ in range(SLOW_CLIENTS)
        ]
        fast = Follower([url], "/events", last_id=str(since))
        stack.enter_context(running(fast))
        until(lambda: ok(api.get("/events/connections"))["count"] == SLOW_CLIENTS + 1, 3)
        started = time.monotonic()
        rss = []
        for _ in range(STEPS):
            push(api)
            rss.append(rss_kb(pid))
        took = time.monotonic() - started
        last = since + STEPS * STEP * BATCH
        fast.wait(last, timeout=20)
        # Each was cut off, not buffered for: what it is sent once it reads is a contiguous
        # run of events and a final frame telling it to resume from the last of them.
        for client in slow:
            status, _, body = client.read_response()
            assert status == 200
            *delivered, cut = events(parse(body))
            assert cut.event == "reconnect"
            assert [f.seq for f in delivered] == list(range(since + 1, cut.seq + 1))
            assert cut.seq < last

    step_mb = STEP * BATCH * len(TITLE) / 2**20
    grown_mb = (max(rss) - baseline) / 1024
    # What stays: the lower of the last two readings. One reading may catch a transient of a
    # dozen MB (a projector batch of these 8 KB events, read and written, is up to ~16 MB),
    # which is gone by the next; growth without bound would show in both.
    plateau_mb = (min(rss[-2:]) - rss[0]) / 1024
    print(f"RSS baseline {baseline} kB, then {rss} kB, {step_mb:.0f} MB pushed between two")
    # Once the slow clients are cut off, more events cost nothing more: no growth with load.
    assert plateau_mb < step_mb, f"RSS grew {plateau_mb:.1f} MB over {STEPS - 1} steps"
    # And what they cost is bounded by their queues, not by what was pushed.
    assert grown_mb < STEPS * step_mb / 2, f"RSS grew {grown_mb:.1f} MB"
    log: list[tuple[int, str, Json]] = [(s, "tool.call", {}) for s in range(since + 1, last + 1)]
    lost, duplicates = check_follower(fast, log)
    report(
        "slow consumers",
        injected=SLOW_CLIENTS,
        pushed_mb=round(STEPS * step_mb),
        rss_grown_mb=round(grown_mb, 1),
        rss_grown_after_first_step_mb=round(plateau_mb, 1),
        write_s=round(took, 2),
        lost=lost,
        duplicates=duplicates,
    )
