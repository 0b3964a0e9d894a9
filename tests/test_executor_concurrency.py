"""The executor against a real Redis, with real replicas: two dispatchers never dispatch an
entry twice, concurrent claims get distinct entries, a lease that misses its heartbeat
expires, and a dead dispatcher is replaced within one lease period.

These servers run on a Redis of their own: every replica dispatches every started
workspace of its Redis, and the suite's shared server, with its own timers, must not be
one of them."""

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from orchestrator.redis_server import RedisServer
from tests.servers import ServerProcess

T = TypeVar("T")
Json = dict[str, Any]
MakeServer = Callable[..., ServerProcess]


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis-executor"), appendonly=False)
    server.start()
    yield server.url
    server.stop()


@contextmanager
def clients(workspace: str, *servers: ServerProcess) -> Iterator[list[httpx.Client]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(httpx.Client(base_url=s.workspace_url(workspace), timeout=10))
            for s in servers
        ]


def until(check: Callable[[], T | None], timeout: float, every: float = 0.01) -> T:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(every)
    return value


def replica_id(server: ServerProcess) -> str:
    for line in server.log_path.read_text().splitlines():
        if '"orchestrator.started"' in line:
            replica: str = json.loads(line)["replica"]
            return replica
    raise AssertionError(f"no replica id in {server.log_path}")


def ok(response: httpx.Response, status: int = 200) -> Json:
    assert response.status_code == status, response.text
    body: Json = response.json()
    return body


def create(api: httpx.Client, *items: Json) -> list[str]:
    created = ok(api.post("/todo/entries", json={"entries": list(items)}), 201)
    return [e["id"] for e in created["entries"]]


def entry(api: httpx.Client, entry_id: str) -> Json:
    found: Json = ok(api.get(f"/todo/entries/{entry_id}"))["entry"]
    return found


def events(api: httpx.Client, *types: str) -> list[Json]:
    found: list[Json] = ok(api.get("/debug-dump"))["events"]
    return [e for e in found if not types or e["type"] in types]


def assert_dispatched_once_per_attempt(log: list[Json]) -> Counter[str]:
    """Fold the log's event-carried entry states: every ``todo.dispatched`` finds its entry
    pending. Returns how often each entry was dispatched."""
    status: dict[str, str] = {}
    dispatched: Counter[str] = Counter()
    for event in log:
        payload = event["payload"]
        if event["type"] == "todo.dispatched":
            entry_id = payload["entryID"]
            assert status[entry_id] == "pending", (event["seq"], entry_id, status[entry_id])
            dispatched[entry_id] += 1
        for carried in payload.get("entries", []):
            status[carried["id"]] = carried["status"]
    return dispatched


# Two dispatchers


def test_two_replicas_never_dispatch_an_entry_twice(
    make_server: MakeServer, own_redis: str, workspace: str
) -> None:
    fast = {"ORCH_DISPATCH_TICK_S": "0.01"}
    servers = [make_server(own_redis, **fast), make_server(own_redis, **fast)]
    with clients(workspace, *servers) as (api_a, api_b):
        flaky = {f"flaky-{i}" for i in range(0, 60, 5)}  # fail once, then complete
        ids = create(api_a, *({"id": f"e-{i}", "content": f"task {i}"} for i in range(60)))
        ids += create(api_b, *({"id": name, "content": "flaky"} for name in sorted(flaky)))
        ok(api_a.patch("/budget", json={"max_workers": 8}))
        ok(api_a.post("/executor/start"))
        ok(api_b.post("/executor/start"))

        finished = threading.Event()

        def retrying(call: Callable[[], httpx.Response]) -> httpx.Response:
            """A 409 VERSION_CONFLICT is the documented answer to a lost race: retry."""
            for _ in range(20):
                if (response := call()).status_code != 409:
                    return response
                assert response.json()["error"]["code"] == "VERSION_CONFLICT", response.text
            raise AssertionError(f"still conflicting after 20 tries: {response.text}")

        def worker(server: ServerProcess, session: str) -> int:
            done = 0
            with httpx.Client(base_url=server.workspace_url(workspace), timeout=10) as api:
                while not finished.is_set():
                    got = retrying(
                        partial(api.post, "/executor/claim", json={"sessionID": session})
                    )
                    if got.status_code == 204:
                        time.sleep(0.005)
                        continue
                    claimed = ok(got)
                    work = claimed["entry"]
                    action = "fail" if work["id"] in flaky and work["attempts"] == 0 else "complete"
                    url = f"/executor/leases/{claimed['lease']['id']}/{action}"
                    ok(retrying(partial(api.post, url)))
                    done += 1
            return done

        def force_dispatch(server: ServerProcess) -> list[str]:
            dispatched: list[str] = []
            with httpx.Client(base_url=server.workspace_url(workspace), timeout=10) as api:
                while not finished.is_set():
                    forced = ok(retrying(partial(api.post, "/executor/force-dispatch")))
                    dispatched += forced["dispatched"]
            return dispatched

        with ThreadPoolExecutor(12) as pool:
            workers = [pool.submit(worker, servers[i % 2], f"w{i}") for i in range(8)]
            forcing = [pool.submit(force_dispatch, s) for s in servers]
            try:
                until(
                    lambda: all(
                        e["status"] == "completed" for e in ok(api_a.get("/todo"))["entries"]
                    ),
                    timeout=20,
                    every=0.05,
                )
            finally:
                finished.set()
            assert sum(w.result() for w in workers) == len(ids) + len(flaky)
            forced = Counter(i for f in forcing for i in f.result())

        log = events(api_a)
        dispatched = assert_dispatched_once_per_attempt(log)
        assert dispatched == {i: 2 if i in flaky else 1 for i in ids}
        assert all(forced[i] <= dispatched[i] for i in forced)
        assert ok(api_b.get("/todo")) == ok(api_a.get("/todo"))
        assert ok(api_b.get("/executor/workers")) == {"workers": []}
        assert ok(api_a.get("/executor/locks")) == {"locks": []}


def test_concurrent_claims_get_distinct_entries(
    make_server: MakeServer, own_redis: str, workspace: str
) -> None:
    servers = [make_server(own_redis), make_server(own_redis)]
    with clients(workspace, *servers) as (api_a, _):
        ids = create(api_a, *({"content": f"task {i}", "files": [f"f{i}.py"]} for i in range(30)))
        ok(api_a.patch("/budget", json={"max_workers": 40}))
        assert sorted(ok(api_a.post("/executor/force-dispatch"))["dispatched"]) == sorted(ids)

        claimers = 36
        gate = threading.Barrier(claimers)

        def claim(i: int) -> httpx.Response:
            server = servers[i % 2]
            with httpx.Client(base_url=server.workspace_url(workspace), timeout=10) as api:
                gate.wait(timeout=10)
                return api.post("/executor/claim", json={"sessionID": f"worker-{i}"})

        with ThreadPoolExecutor(claimers) as pool:
            responses = list(pool.map(claim, range(claimers)))

        statuses = Counter(r.status_code for r in responses)
        assert statuses == {200: 30, 204: 6}, [r.text for r in responses if r.status_code >= 400]
        granted = [r.json() for r in responses if r.status_code == 200]
        assert sorted(g["entry"]["id"] for g in granted) == sorted(ids)
        assert len({g["lease"]["id"] for g in granted}) == 30
        for g in granted:
            assert g["entry"]["assigned_to"] == g["lease"]["sessionID"]
        leases = ok(api_a.get("/executor/workers"))["workers"]
        assert sorted(x["id"] for x in leases) == sorted(g["lease"]["id"] for g in granted)
        locks = ok(api_a.get("/executor/locks"))["locks"]
        assert len(locks) == 30
        assert len(events(api_a, "lease.granted")) == 30


# Worker leases


def test_a_lease_that_misses_its_heartbeat_expires(
    make_server: MakeServer, own_redis: str, workspace: str
) -> None:
    lease_ms = 600
    server = make_server(
        own_redis,
        ORCH_WORKER_LEASE_MS=str(lease_ms),
        ORCH_DISPATCH_TICK_S="0.02",
        ORCH_MAX_ATTEMPTS="2",
    )
    with clients(workspace, server) as (api,):
        [a] = create(api, {"content": "a", "files": ["src/a.py"]})
        ok(api.post("/executor/start"))

        def claim(session: str) -> Json:
            def claimed() -> Json | None:
                response = api.post("/executor/claim", json={"sessionID": session})
                return None if response.status_code == 204 else ok(response)

            return until(claimed, timeout=3)

        first = claim("w1")["lease"]
        # Heartbeats keep it well past one lease period.
        for _ in range(6):
            time.sleep(lease_ms / 4000)
            ok(api.post(f"/executor/leases/{first['id']}/heartbeat"))
        assert entry(api, a)["status"] == "in_progress"
        assert [x["id"] for x in ok(api.get("/executor/workers"))["workers"]] == [first["id"]]

        # Then the worker goes quiet.
        expired = until(lambda: events(api, "lease.expired"), timeout=3)
        assert [e["payload"]["leaseID"] for e in expired] == [first["id"]]
        after = until(lambda: (e := entry(api, a))["attempts"] == 1 and e, timeout=2)
        assert after["status"] in ("pending", "dispatched")  # dispatched again, at once
        assert ok(api.get("/executor/locks")) == {"locks": []}
        [unlocked] = events(api, "lock.released")
        assert unlocked["payload"]["files"] == ["src/a.py"]
        assert unlocked["payload"]["reason"] == "lease expired"
        gone = api.post(f"/executor/leases/{first['id']}/heartbeat")
        assert (gone.status_code, gone.json()["error"]["code"]) == (404, "LEASE_NOT_FOUND")

        # The second attempt expires too: ORCH_MAX_ATTEMPTS is 2, so the entry fails.
        second = claim("w2")["lease"]
        assert second["entryID"] == a
        failed = until(lambda: (e := entry(api, a))["status"] == "failed" and e, timeout=3)
        assert failed["attempts"] == 2
        [event] = events(api, "todo.failed")
        assert event["payload"]["reason"] == "lease expired; attempt 2 of 2"
        assert ok(api.get("/executor/workers")) == {"workers": []}
        assert ok(api.get("/executor/locks")) == {"locks": []}

        # An entry whose worker dies while verifying goes back to pending too, and the
        # dispatcher goes on dispatching the workspace.
        [b] = create(api, {"content": "b", "files": ["src/b.py"]})
        claim("w3")
        ok(api.patch(f"/todo/entries/{b}/status", json={"status": "verifying"}))
        until(lambda: entry(api, b)["attempts"] == 1, timeout=3)
        [c] = create(api, {"content": "c"})
        until(lambda: entry(api, c)["status"] == "dispatched", timeout=2)


def test_a_lease_past_its_expiry_is_refused_before_it_is_swept(
    make_server: MakeServer, own_redis: str, workspace: str
) -> None:
    # The dispatcher sweeps once at start, then sleeps a minute: nothing expires the lease.
    server = make_server(own_redis, ORCH_WORKER_LEASE_MS="200", ORCH_DISPATCH_TICK_S="60")
    with clients(workspace, server) as (api,):
        [a] = create(api, {"content": "a", "files": ["x"]})
        ok(api.post("/executor/force-dispatch"))
        lease = ok(api.post("/executor/claim", json={"sessionID": "w1"}))["lease"]
        time.sleep(max(0.0, lease["expires_at"] / 1000 - time.time()) + 0.05)
        for action in ("heartbeat", "complete", "fail"):
            late = api.post(f"/executor/leases/{lease['id']}/{action}")
            assert late.status_code == 409, late.text
            assert late.json()["error"] == {
                "code": "LEASE_EXPIRED",
                "message": f"lease {lease['id']} expired at {lease['expires_at']}; claim again",
                "details": {"leaseID": lease["id"], "expires_at": lease["expires_at"]},
            }
        assert entry(api, a)["status"] == "in_progress"

        # The next cycle expires it (a forced one here): the attempt is counted.
        report = ok(api.post("/executor/force-dispatch"))
        assert report["dispatched"] == [a]
        assert entry(api, a)["attempts"] == 1
        gone = api.post(f"/executor/leases/{lease['id']}/heartbeat")
        assert gone.json()["error"]["code"] == "LEASE_NOT_FOUND"


def test_leases_expire_though_the_executor_was_never_started(
    make_server: MakeServer, own_redis: str, workspace: str
) -> None:
    server = make_server(own_redis, ORCH_WORKER_LEASE_MS="200", ORCH_DISPATCH_TICK_S="0.02")
    with clients(workspace, server) as (api,):
        [a] = create(api, {"content": "a", "files": ["x"]})
        ok(api.post("/executor/force-dispatch"))
        ok(api.post("/executor/claim", json={"sessionID": "w1"}))
        back = until(lambda: (e := entry(api, a))["status"] == "pending" and e, timeout=3)
        assert back["attempts"] == 1
        assert ok(api.get("/executor/locks")) == {"locks": []}
        assert ok(api.get("/executor/status"))["executor"]["status"] == "stopped"


# The dispatcher lease


def test_a_killed_dispatcher_is_replaced_within_one_lease_period(
    make_server: MakeServer, own_redis: str, workspace: str, tmp_path: Path
) -> None:
    lease_s = 2.0
    env = {"ORCH_DISPATCHER_LEASE_MS": str(int(lease_s * 1000)), "ORCH_DISPATCH_TICK_S": "0.05"}
    servers = [make_server(own_redis, **env), make_server(own_redis, **env)]
    with clients(workspace, *servers) as apis:
        ok(apis[0].post("/executor/start"))
        holder = until(lambda: ok(apis[0].get("/executor/status"))["executor"]["dispatcher"], 3)
        ids = [replica_id(s) for s in servers]
        assert holder in ids
        dead = ids.index(holder)
        alive_api, alive_id = apis[1 - dead], ids[1 - dead]

        servers[dead].kill()
        killed = time.monotonic()
        [a] = create(alive_api, {"content": "after the crash"})
        until(lambda: entry(alive_api, a)["status"] == "dispatched", timeout=lease_s + 2)
        took = time.monotonic() - killed
        assert took < lease_s + 0.75, f"took {took:.2f} s"  # a lease period, and a tick
        status = ok(alive_api.get("/executor/status"))["executor"]
        assert status["dispatcher"] == alive_id

        # A replica that stops gracefully hands over at once, not after the lease period.
        third = make_server(own_redis, **env)
        with clients(workspace, third) as (third_api,):
            servers[1 - dead].stop()
            stopped = time.monotonic()
            [b] = create(third_api, {"content": "after the handover"})
            until(lambda: entry(third_api, b)["status"] == "dispatched", timeout=lease_s + 2)
            took = time.monotonic() - stopped
            assert took < lease_s / 2, f"took {took:.2f} s"
            status = ok(third_api.get("/executor/status"))["executor"]
            assert status["dispatcher"] == replica_id(third)
