"""The executor, its workers and locks, and the budget (API.md part 4): every endpoint's
success and failure paths, with the codes it documents.

The shared server's dispatcher dispatches only workspaces whose executor was started, so a
test that wants a deterministic dispatch keeps the executor stopped and runs the cycle with
``force-dispatch``."""

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
Json = dict[str, Any]


# Helpers


def until(check: Callable[[], T], timeout: float = 5.0, every: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(every)
    return value


def create(api: httpx.Client, *items: Json) -> list[str]:
    response = api.post("/todo/entries", json={"entries": list(items)})
    assert response.status_code == 201, response.text
    return [e["id"] for e in response.json()["entries"]]


def task(content: str = "do it", **fields: Any) -> Json:
    return {"content": content, **fields}


def entry(api: httpx.Client, entry_id: str) -> Json:
    response = api.get(f"/todo/entries/{entry_id}")
    assert response.status_code == 200, response.text
    found: Json = response.json()["entry"]
    return found


def force(api: httpx.Client) -> Json:
    response = api.post("/executor/force-dispatch")
    assert response.status_code == 200, response.text
    report: Json = response.json()
    return report


def reasons(report: Json, entry_id: str) -> dict[str, Json]:
    """The reasons an entry was not dispatched, by code (empty if it was)."""
    [diagnostic] = [d for d in report["diagnostics"] if d["entryID"] == entry_id]
    assert diagnostic["dispatched"] == (not diagnostic["reasons"])
    return {r["code"]: r for r in diagnostic["reasons"]}


def claim(api: httpx.Client, session: str) -> Json:
    response = api.post("/executor/claim", json={"sessionID": session})
    assert response.status_code == 200, response.text
    claimed: Json = response.json()
    return claimed


def lease_call(api: httpx.Client, lease_id: str, action: str, **body: Any) -> httpx.Response:
    return api.post(f"/executor/leases/{lease_id}/{action}", json=body or None)


def executor(api: httpx.Client) -> Json:
    response = api.get("/executor/status")
    assert response.status_code == 200, response.text
    state: Json = response.json()["executor"]
    return state


def events(api: httpx.Client, *types: str) -> list[Json]:
    found: list[Json] = api.get("/debug-dump").json()["events"]
    return [e for e in found if not types or e["type"] in types]


def error(response: httpx.Response, status: int, code: str) -> Json:
    assert response.status_code == status, response.text
    body: Json = response.json()["error"]
    assert body["code"] == code, body
    return body


def usage(api: httpx.Client, **body: Any) -> Json:
    response = api.post("/usage", json={"sessionID": "w1", **body})
    assert response.status_code == 201, response.text
    reported: Json = response.json()["usage"]
    return reported


def caps(api: httpx.Client, **patch: Any) -> Json:
    response = api.patch("/budget", json=patch)
    assert response.status_code == 200, response.text
    budget: Json = response.json()["budget"]
    return budget


# Run state


def test_a_fresh_workspace_has_a_stopped_executor(api: httpx.Client) -> None:
    assert executor(api) == {
        "status": "stopped",
        "reason": None,
        "started_at": None,
        "wall_ms": 0,
        "dispatcher": None,
        "workers": {"active": 0, "max": 4, "leases": 0},
        "entries": {},
        "exceeded": [],
    }
    assert api.get("/executor/workers").json() == {"workers": []}
    assert api.get("/executor/locks").json() == {"locks": []}


def test_start_pause_resume_and_their_conflicts(api: httpx.Client) -> None:
    error(api.post("/executor/pause"), 409, "EXECUTOR_NOT_RUNNING")
    error(api.post("/executor/resume"), 409, "EXECUTOR_NOT_PAUSED")

    assert api.post("/executor/start").json() == {"started": True}
    assert api.post("/executor/start").json() == {"started": True}  # already running
    state = executor(api)
    assert state["status"] == "running"
    assert state["started_at"] is not None
    # Some replica's dispatcher takes the workspace on within a tick.
    assert until(lambda: executor(api)["dispatcher"]).startswith("rep_")

    assert api.post("/executor/pause").json() == {"paused": True}
    assert api.post("/executor/pause").json() == {"paused": True}
    paused = executor(api)
    assert (paused["status"], paused["reason"]) == ("paused", "paused by operator")
    wall = paused["wall_ms"]
    time.sleep(0.05)
    assert executor(api)["wall_ms"] == wall  # the wall clock stops while paused

    assert api.post("/executor/resume").json() == {"resumed": True}
    assert api.post("/executor/resume").json() == {"resumed": True}  # already running
    assert executor(api)["status"] == "running"

    stopped = api.post("/executor/stop-all")
    assert stopped.json() == {"stopped": True, "released": [], "returned": []}
    assert executor(api)["status"] == "stopped"
    error(api.post("/executor/pause"), 409, "EXECUTOR_NOT_RUNNING")
    error(api.post("/executor/resume"), 409, "EXECUTOR_NOT_PAUSED")

    assert [e["type"] for e in events(api)] == [
        "executor.started",
        "executor.paused",
        "executor.resumed",
        "executor.stopped",
    ]


def test_stop_all_revokes_leases_releases_locks_and_returns_entries(api: httpx.Client) -> None:
    a, b, c = create(api, task(files=["a.py"]), task(files=["b.py"]), task())
    assert force(api)["dispatched"] == [a, b, c]
    lease_a = claim(api, "w1")["lease"]["id"]
    lease_b = claim(api, "w2")["lease"]["id"]
    assert len(api.get("/executor/locks").json()["locks"]) == 2

    stopped = api.post("/executor/stop-all")
    assert stopped.status_code == 200, stopped.text
    body = stopped.json()
    assert sorted(body.pop("released")) == sorted([lease_a, lease_b])  # in no particular order
    assert body == {"stopped": True, "returned": [a, b, c]}
    assert api.get("/executor/locks").json() == {"locks": []}
    assert api.get("/executor/workers").json() == {"workers": []}
    for entry_id in (a, b, c):
        after = entry(api, entry_id)
        assert (after["status"], after["attempts"], after["assigned_to"]) == ("pending", 0, None)
    released = events(api, "lease.released", "lock.released")
    assert [(e["type"], e["payload"]["leaseID"]) for e in released] == [
        ("lock.released", lease_a),
        ("lease.released", lease_a),
        ("lock.released", lease_b),
        ("lease.released", lease_b),
    ]
    assert {e["payload"].get("outcome") for e in released} == {None, "stopped"}
    error(lease_call(api, lease_a, "heartbeat"), 404, "LEASE_NOT_FOUND")

    # Stopped, not wedged: the entries dispatch again.
    assert force(api)["dispatched"] == [a, b, c]


# Force-dispatch diagnostics


def test_force_dispatch_runs_one_cycle_on_a_stopped_executor(api: httpx.Client) -> None:
    assert force(api) == {"dispatched": [], "diagnostics": [], "executor": "stopped"}
    [a] = create(api, task())
    report = force(api)
    assert report == {
        "dispatched": [a],
        "diagnostics": [{"entryID": a, "dispatched": True, "reasons": []}],
        "executor": "stopped",
    }
    dispatched = entry(api, a)
    assert (dispatched["status"], dispatched["version"]) == ("dispatched", 2)
    [event] = events(api, "todo.dispatched")
    assert event["payload"]["entryID"] == a
    assert force(api)["diagnostics"] == []  # only pending entries are considered


def test_dependencies_hold_an_entry_back_until_completed(api: httpx.Client) -> None:
    a, b = create(api, task(id="dep-a"), task(id="dep-b", depends_on=["dep-a"]))
    report = force(api)
    assert report["dispatched"] == [a]
    assert reasons(report, b) == {
        "dependencies": {
            "code": "dependencies",
            "message": "waiting for dependencies to complete",
            "ids": [a],
        }
    }
    lease = claim(api, "w1")["lease"]
    assert lease_call(api, lease["id"], "complete").status_code == 200
    assert force(api)["dispatched"] == [b]


def test_an_inactive_phase_holds_its_entries_back(api: httpx.Client) -> None:
    created = api.post("/phases", json={"name": "build"})
    assert created.status_code == 201, created.text
    phase = created.json()["phase"]
    assert phase["status"] == "pending"
    [a] = create(api, task(phase_id=phase["id"]))
    assert reasons(force(api), a)["phase_inactive"]["ids"] == [phase["id"]]

    activated = api.patch(f"/phases/{phase['id']}", json={"status": "active"})
    assert activated.status_code == 200, activated.text
    assert force(api)["dispatched"] == [a]


def test_files_held_by_another_worker_hold_an_entry_back(api: httpx.Client) -> None:
    a, b, c = create(
        api, task(files=["src/x.py"]), task(files=["src/x.py", "src/y.py"]), task(files=["z"])
    )
    report = force(api)
    assert report["dispatched"] == [a, c]  # c shares no file
    locked = reasons(report, b)["files_locked"]
    assert locked["ids"] == [a]
    assert "src/x.py" in locked["message"]
    assert "src/y.py" not in locked["message"]

    lease = claim(api, "w1")["lease"]
    assert lease["entryID"] == a
    [lock] = [x for x in api.get("/executor/locks").json()["locks"] if x["file"] == "src/x.py"]
    assert lock == {
        "file": "src/x.py",
        "leaseID": lease["id"],
        "entryID": a,
        "sessionID": "w1",
        "expires_at": lease["expires_at"],
    }
    assert reasons(force(api), b)["files_locked"]["ids"] == [a]

    assert lease_call(api, lease["id"], "complete").status_code == 200
    assert force(api)["dispatched"] == [b]


def test_the_files_an_entry_locks_include_those_its_spec_names(api: httpx.Client) -> None:
    spec = {"files_to_create": ["src/new.py"], "files_to_modify": ["setup.cfg"]}
    a, b, c = create(
        api,
        task(files=["src/x.py"], spec=spec),
        task(files=["src/new.py"]),  # created by a's spec
        task(spec={"files_to_modify": ["setup.cfg"]}),
    )
    report = force(api)
    assert report["dispatched"] == [a]
    assert reasons(report, b)["files_locked"]["ids"] == [a]
    assert reasons(report, c)["files_locked"]["ids"] == [a]

    lease = claim(api, "w1")["lease"]
    assert lease["entryID"] == a
    locks = api.get("/executor/locks").json()["locks"]
    assert sorted(x["file"] for x in locks) == ["setup.cfg", "src/new.py", "src/x.py"]
    assert {x["entryID"] for x in locks} == {a}


def test_priority_words_dispatch_critical_first_then_by_seq(api: httpx.Client) -> None:
    assert caps(api, max_workers=1)["usage"]["max_workers"] == 1
    words = ["low", "medium", "high", "critical", "high", "medium"]
    ids = create(api, *(task(priority=w) for w in words))
    order = []
    for _ in ids:
        [dispatched] = force(api)["dispatched"]
        order.append(dispatched)
        lease = claim(api, "w1")["lease"]
        assert lease_call(api, lease["id"], "complete").status_code == 200
    assert order == [ids[3], ids[2], ids[4], ids[1], ids[5], ids[0]]


def test_a_full_house_of_workers_holds_entries_back(api: httpx.Client) -> None:
    assert caps(api, max_workers=1)["usage"]["max_workers"] == 1
    low, high = create(api, task(priority="medium"), task(priority="critical"))
    report = force(api)
    assert report["dispatched"] == [high]  # by priority first
    assert list(reasons(report, low)) == ["no_worker_slot"]
    assert executor(api)["workers"] == {"active": 1, "max": 1, "leases": 0}

    caps(api, max_workers=2)
    assert force(api)["dispatched"] == [low]


def test_a_spent_global_cap_holds_every_entry_back(api: httpx.Client) -> None:
    [a] = create(api, task())
    caps(api, cap_usd=1)
    usage(api, cost_usd=1.0)
    report = force(api)
    assert report["dispatched"] == []
    assert reasons(report, a)["budget_spent"]["message"] == "cap_usd is spent (1 of 1)"
    assert executor(api)["exceeded"] == ["cap_usd"]

    caps(api, cap_usd=None)
    assert force(api)["dispatched"] == [a]


def test_a_non_parallelizable_entry_runs_alone(api: httpx.Client) -> None:
    a, solo = create(api, task(priority="high"), task(parallelizable=False))
    report = force(api)
    assert report["dispatched"] == [a]
    assert list(reasons(report, solo)) == ["not_parallelizable"]

    assert lease_call(api, claim(api, "w1")["lease"]["id"], "complete").status_code == 200
    assert force(api)["dispatched"] == [solo]
    [b] = create(api, task())
    assert reasons(force(api), b) == {
        "exclusive": {
            "code": "exclusive",
            "message": "a non-parallelizable entry is running",
            "ids": [solo],
        }
    }


def test_a_spent_entry_budget_holds_the_entry_back(api: httpx.Client) -> None:
    [a] = create(api, task(budget_usd=1.0))
    force(api)
    claim(api, "w1")
    usage(api, entryID=a, cost_usd=1.0)
    assert entry(api, a)["status"] == "blocked"

    back = api.patch(f"/todo/entries/{a}/status", json={"status": "pending"})
    assert back.status_code == 200, back.text
    assert list(reasons(force(api), a)) == ["entry_budget_spent"]

    raised = api.patch(f"/todo/entries/{a}/budget", json={"budget_usd": 2.0})
    assert raised.status_code == 200, raised.text
    assert force(api)["dispatched"] == [a]


def test_used_up_entry_rounds_hold_the_entry_back(api: httpx.Client) -> None:
    [a] = create(api, task(budget_rounds=1))
    force(api)
    claim(api, "w1")
    usage(api, entryID=a, rounds=1)
    blocked = entry(api, a)
    assert (blocked["status"], blocked["rounds_completed"]) == ("blocked", 1)
    [exceeded] = events(api, "budget.exceeded")
    assert exceeded["payload"] == {
        "scope": "entry",
        "cap": "budget_rounds",
        "limit": 1.0,
        "spent": 1.0,
        "entryID": a,
    }

    api.patch(f"/todo/entries/{a}/status", json={"status": "pending"})
    assert list(reasons(force(api), a)) == ["entry_rounds_spent"]
    more = api.patch(f"/todo/entries/{a}/rounds", json={"budget_rounds": 2})
    assert more.status_code == 200, more.text
    assert force(api)["dispatched"] == [a]


def test_a_diagnostic_names_every_reason_that_holds(api: httpx.Client) -> None:
    phase = api.post("/phases", json={"name": "later"}).json()["phase"]
    _, second = create(
        api,
        task(id="first", files=["f"]),
        task(depends_on=["first"], files=["f"], phase_id=phase["id"], budget_rounds=0),
    )
    assert list(reasons(force(api), second)) == [
        "dependencies",
        "phase_inactive",
        "files_locked",
        "entry_rounds_spent",
    ]


# Workers


def test_claim_leases_the_next_dispatched_entry(api: httpx.Client) -> None:
    nothing = api.post("/executor/claim", json={"sessionID": "w1"})
    assert (nothing.status_code, nothing.content) == (204, b"")

    a, b = create(api, task(files=["m.py"]), task(priority="high"))
    force(api)
    first = claim(api, "w1")
    assert list(first) == ["lease", "entry"]
    lease = first["lease"]
    assert list(lease) == ["id", "entryID", "sessionID", "expires_at"]
    assert lease["id"].startswith("lease_")
    assert (lease["entryID"], lease["sessionID"]) == (b, "w1")  # higher priority first
    assert lease["expires_at"] > time.time() * 1000
    started = first["entry"]
    assert (started["id"], started["status"], started["assigned_to"]) == (b, "in_progress", "w1")
    assert started["session_ids"] == ["w1"]
    assert started == entry(api, b)

    # The same session gets its current lease back, not a second entry.
    assert claim(api, "w1") == first
    second = claim(api, "w2")
    assert (second["lease"]["entryID"], second["entry"]["status"]) == (a, "in_progress")
    none_left = api.post("/executor/claim", json={"sessionID": "w3"})
    assert none_left.status_code == 204

    workers = api.get("/executor/workers").json()["workers"]
    assert [(w["id"], w["entryID"], w["sessionID"]) for w in workers] == [
        (lease["id"], b, "w1"),
        (second["lease"]["id"], a, "w2"),
    ]
    assert workers[1]["files"] == ["m.py"]
    assert [e["type"] for e in events(api, "lease.granted", "lock.acquired", "todo.started")] == [
        "lease.granted",
        "todo.started",
        "lease.granted",
        "lock.acquired",
        "todo.started",
    ]


def test_claim_rejects_a_bad_body(api: httpx.Client) -> None:
    error(api.post("/executor/claim", content=b""), 400, "INVALID_JSON")
    error(api.post("/executor/claim", content=b"{"), 400, "INVALID_JSON")
    error(api.post("/executor/claim", json={}), 422, "VALIDATION_FAILED")
    error(api.post("/executor/claim", json={"sessionID": "w1", "x": 1}), 422, "VALIDATION_FAILED")
    error(api.post("/executor/claim", json={"sessionID": ""}), 422, "VALIDATION_FAILED")


def test_heartbeat_renews_the_lease_and_its_locks(api: httpx.Client) -> None:
    create(api, task(files=["h.py"]))
    force(api)
    lease = claim(api, "w1")["lease"]
    time.sleep(0.01)
    renewed = lease_call(api, lease["id"], "heartbeat")
    assert renewed.status_code == 200, renewed.text
    after = renewed.json()["lease"]
    assert {k: v for k, v in after.items() if k != "expires_at"} == {
        k: v for k, v in lease.items() if k != "expires_at"
    }
    assert after["expires_at"] > lease["expires_at"]
    [lock] = api.get("/executor/locks").json()["locks"]
    assert lock["expires_at"] == after["expires_at"]
    [worker] = api.get("/executor/workers").json()["workers"]
    assert worker["expires_at"] == after["expires_at"]
    [event] = events(api, "lease.renewed")
    assert event["payload"]["expires_at"] == after["expires_at"]


def test_lease_calls_on_an_unknown_lease_are_404(api: httpx.Client) -> None:
    for action in ("heartbeat", "complete", "fail"):
        body = error(lease_call(api, "lease_nope", action), 404, "LEASE_NOT_FOUND")
        assert body["details"] == {"leaseID": "lease_nope"}
    error(lease_call(api, "not a lease!", "heartbeat"), 400, "INVALID_ID")


def test_complete_finishes_the_entry_and_releases_its_locks(api: httpx.Client) -> None:
    [a] = create(api, task(files=["c.py"]))
    force(api)
    lease = claim(api, "w1")["lease"]
    report = [{"criterion": "tests pass", "passed": True, "evidence": "42 passed"}]
    done = lease_call(api, lease["id"], "complete", summary="did it", report=report)
    assert done.status_code == 200, done.text
    completed = done.json()["entry"]
    assert (completed["status"], completed["summary"], completed["report"]) == (
        "completed",
        "did it",
        report,
    )
    assert completed == entry(api, a)
    assert completed["assigned_to"] is None
    assert api.get("/executor/locks").json() == {"locks": []}
    assert api.get("/executor/workers").json() == {"workers": []}
    tail = [(e["type"], e["payload"].get("outcome")) for e in events(api)][-3:]
    assert tail == [
        ("lock.released", None),
        ("lease.released", "completed"),
        ("todo.completed", None),
    ]

    error(lease_call(api, lease["id"], "complete"), 404, "LEASE_NOT_FOUND")
    bad = lease_call(api, "lease_x", "complete", verdict="yes")
    error(bad, 422, "VALIDATION_FAILED")


def test_fail_retries_until_the_attempts_run_out(api: httpx.Client) -> None:
    # The shared server allows ORCH_MAX_ATTEMPTS (3) attempts.
    [a] = create(api, task(files=["f.py"]))
    for attempt in (1, 2):
        force(api)
        lease = claim(api, f"w{attempt}")["lease"]
        failed = lease_call(api, lease["id"], "fail", reason="tests red")
        assert failed.status_code == 200, failed.text
        retried = failed.json()["entry"]
        assert (retried["status"], retried["attempts"]) == ("pending", attempt)
        assert retried["session_ids"] == [f"w{i}" for i in range(1, attempt + 1)]
        assert api.get("/executor/locks").json() == {"locks": []}

    force(api)
    lease = claim(api, "w3")["lease"]
    last = lease_call(api, lease["id"], "fail", reason="tests red").json()["entry"]
    assert (last["status"], last["attempts"]) == ("failed", 3)
    [failed_event] = events(api, "todo.failed")
    assert failed_event["payload"]["reason"] == "tests red; attempt 3 of 3"
    assert [e["payload"]["outcome"] for e in events(api, "lease.released")] == ["stopped"] * 2 + [
        "failed"
    ]
    assert entry(api, a)["status"] == "failed"
    assert force(api)["diagnostics"] == []  # failed is not pending: never dispatched again


def test_fail_without_retry_fails_at_once(api: httpx.Client) -> None:
    [a] = create(api, task())
    force(api)
    lease = claim(api, "w1")["lease"]
    failed = lease_call(api, lease["id"], "fail", reason="impossible", retry=False)
    assert failed.status_code == 200, failed.text
    assert (failed.json()["entry"]["status"], failed.json()["entry"]["attempts"]) == ("failed", 1)
    assert entry(api, a)["status"] == "failed"
    [event] = events(api, "todo.failed")
    assert event["payload"]["reason"].startswith("impossible")
    error(lease_call(api, lease["id"], "fail"), 404, "LEASE_NOT_FOUND")
    error(lease_call(api, "lease_x", "fail", reason=""), 422, "VALIDATION_FAILED")


def test_a_question_from_the_worker_puts_its_entry_on_hold(api: httpx.Client) -> None:
    [a] = create(api, task())
    force(api)
    lease = claim(api, "w1")["lease"]
    question = {
        "question": "Which database?",
        "header": "DB",
        "options": [{"label": "Postgres"}, {"label": "SQLite"}],
    }
    tool = {"messageID": "msg_1", "callID": "call_1"}

    def ask() -> str:
        asked = api.post(
            "/questions", json={"sessionID": "w1", "questions": [question], "tool": tool}
        )
        assert asked.status_code == 201, asked.text
        question_id: str = asked.json()["question"]["id"]
        return question_id

    first = ask()
    assert entry(api, a)["status"] == "awaiting_input"
    assert executor(api)["entries"] == {"awaiting_input": 1}
    # Still leased: the worker keeps heartbeating while it waits.
    assert lease_call(api, lease["id"], "heartbeat").status_code == 200

    answered = api.post(f"/questions/{first}/answer", json={"answers": [["Postgres"]]})
    assert answered.status_code == 200, answered.text
    assert entry(api, a)["status"] == "in_progress"

    second = ask()
    assert entry(api, a)["status"] == "awaiting_input"
    assert api.post(f"/questions/{second}/reject", json={}).status_code == 200
    assert entry(api, a)["status"] == "in_progress"

    moves = [(e["payload"]["from"], e["payload"]["to"]) for e in events(api, "todo.status_changed")]
    assert moves == [
        ("in_progress", "awaiting_input"),
        ("awaiting_input", "in_progress"),
        ("in_progress", "awaiting_input"),
        ("awaiting_input", "in_progress"),
    ]

    # A question from a session that holds no lease leaves every entry alone.
    ask_other = api.post(
        "/questions", json={"sessionID": "w9", "questions": [question], "tool": tool}
    )
    assert ask_other.status_code == 201
    assert entry(api, a)["status"] == "in_progress"


# Budget


def test_budget_caps_merge_and_null_removes_one(api: httpx.Client) -> None:
    fresh = api.get("/budget")
    assert fresh.status_code == 200
    assert fresh.json() == {
        "budget": {
            "caps": {},
            "usage": {
                "cost_usd": 0.0,
                "tokens": 0,
                "tool_calls": 0,
                "wall_ms": 0,
                "workers": 0,
                "max_workers": 4,
            },
            "exceeded": [],
        }
    }
    assert caps(api, cap_usd=5)["caps"] == {"cap_usd": 5.0}
    assert caps(api, max_tokens=1000, max_workers=2)["caps"] == {
        "cap_usd": 5.0,
        "max_tokens": 1000,
        "max_workers": 2,
    }
    merged = caps(api, cap_usd=None, max_tool_calls=10, max_wall_ms=60_000)
    assert merged["caps"] == {
        "max_tokens": 1000,
        "max_tool_calls": 10,
        "max_wall_ms": 60_000,
        "max_workers": 2,
    }
    assert merged["usage"]["max_workers"] == 2
    assert api.get("/budget").json()["budget"] == merged
    assert [e["payload"]["caps"] for e in events(api, "budget.updated")][-1] == merged["caps"]


def test_budget_patch_rejects_what_is_not_a_cap(api: httpx.Client) -> None:
    caps(api, cap_usd=5)
    unknown = error(api.patch("/budget", json={"cap_usd": 1, "bogus": 1}), 422, "VALIDATION_FAILED")
    assert unknown["details"] == {"path": "$.bogus"}
    assert "cap_usd, max_tokens" in unknown["message"]
    for bad in ({"cap_usd": -1}, {"cap_usd": "lots"}, {"max_workers": 0}, {"max_tokens": 1.5}):
        error(api.patch("/budget", json=bad), 422, "VALIDATION_FAILED")
    error(api.patch("/budget", json=[1]), 422, "VALIDATION_FAILED")
    error(api.patch("/budget", content=b""), 400, "INVALID_JSON")
    assert api.get("/budget").json()["budget"]["caps"] == {"cap_usd": 5.0}
    assert len(events(api, "budget.updated")) == 1


def test_usage_reports_accumulate(api: httpx.Client) -> None:
    [a] = create(api, task())
    first = usage(api, entryID=a, cost_usd=1.25, tokens=100)
    assert (first["cost_usd"], first["tokens"]) == (1.25, 100)
    second = usage(api, sessionID="w2", entryID=a, cost_usd=0.5, tokens=20)
    assert (second["cost_usd"], second["tokens"]) == (1.75, 120)
    usage(api, cost_usd=0.25)  # spend of no particular entry
    budget = api.get("/budget").json()["budget"]["usage"]
    assert (budget["cost_usd"], budget["tokens"]) == (2.0, 120)
    spent = entry(api, a)
    assert (spent["spent_usd"], spent["tokens"], spent["session_ids"]) == (1.75, 120, ["w1", "w2"])
    assert spent["status"] == "pending"  # no budget: nothing to exceed
    reported = events(api, "usage.reported")
    assert [e["payload"]["cost_usd"] for e in reported] == [1.25, 0.5, 0.25]
    assert events(api, "budget.exceeded") == []


def test_usage_rejects_bad_reports(api: httpx.Client) -> None:
    error(
        api.post("/usage", json={"sessionID": "w1", "entryID": "entry_nope"}),
        404,
        "ENTRY_NOT_FOUND",
    )
    error(api.post("/usage", json={"cost_usd": 1}), 422, "VALIDATION_FAILED")
    error(api.post("/usage", json={"sessionID": "w1", "cost_usd": -1}), 422, "VALIDATION_FAILED")
    error(api.post("/usage", json={"sessionID": "w1", "tokens": "many"}), 422, "VALIDATION_FAILED")
    error(api.post("/usage", content=b""), 400, "INVALID_JSON")
    assert api.get("/budget").json()["budget"]["usage"]["cost_usd"] == 0.0


def test_a_spent_entry_budget_blocks_the_entry(api: httpx.Client) -> None:
    [a] = create(api, task(budget_usd=1.0, files=["e.py"]))
    force(api)
    lease = claim(api, "w1")["lease"]
    usage(api, entryID=a, cost_usd=0.6)
    assert entry(api, a)["status"] == "in_progress"
    assert events(api, "budget.exceeded") == []

    usage(api, entryID=a, cost_usd=0.5)
    blocked = entry(api, a)
    assert (blocked["status"], blocked["spent_usd"]) == ("blocked", 1.1)
    [exceeded] = events(api, "budget.exceeded")
    assert exceeded["payload"] == {
        "scope": "entry",
        "cap": "budget_usd",
        "limit": 1.0,
        "spent": 1.1,
        "entryID": a,
    }
    # Blocking takes the entry from its worker: lease and locks are gone.
    assert api.get("/executor/locks").json() == {"locks": []}
    assert api.get("/executor/workers").json() == {"workers": []}
    [released] = events(api, "lease.released")
    assert released["payload"]["outcome"] == "revoked"
    error(lease_call(api, lease["id"], "heartbeat"), 404, "LEASE_NOT_FOUND")
    assert executor(api)["status"] == "stopped"  # an entry's cap pauses nothing

    usage(api, entryID=a, cost_usd=0.5)  # late reports still count, and trip nothing again
    assert entry(api, a)["spent_usd"] == 1.6
    assert len(events(api, "budget.exceeded")) == 1


def test_a_spent_global_cap_pauses_the_executor(api: httpx.Client) -> None:
    assert api.post("/executor/start").status_code == 200
    caps(api, cap_usd=2)
    usage(api, cost_usd=1.0)
    assert executor(api)["status"] == "running"

    usage(api, cost_usd=1.5)
    state = executor(api)
    assert state["status"] == "paused"
    assert state["reason"] == "budget: cap_usd spent"
    assert state["exceeded"] == ["cap_usd"]
    exceeded, paused = events(api, "budget.exceeded", "executor.paused")
    assert exceeded["payload"] == {"scope": "global", "cap": "cap_usd", "limit": 2.0, "spent": 2.5}
    assert paused["seq"] == exceeded["seq"] + 1
    assert "cap_usd spent (2.5 of 2)" in paused["payload"]["reason"]
    assert api.get("/budget").json()["budget"]["exceeded"] == ["cap_usd"]

    # Resuming with the cap still spent would only pause again: refused, naming the cap.
    refused = api.post("/executor/resume")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "BUDGET_SPENT"
    assert refused.json()["error"]["details"] == {"cap": "cap_usd", "limit": 2.0, "spent": 2.5}
    assert api.post("/executor/stop-all").status_code == 200
    assert api.post("/executor/start").json()["error"]["code"] == "BUDGET_SPENT"
    assert executor(api)["status"] == "stopped"

    # A bigger cap, then start: it runs again and stays running.
    caps(api, cap_usd=10)
    assert api.post("/executor/start").json() == {"started": True}
    time.sleep(0.6)  # more than one dispatcher tick of the shared server (0.5 s)
    assert executor(api)["status"] == "running"
    assert len(events(api, "budget.exceeded")) == 1


def test_a_cap_lowered_below_the_spend_pauses_the_executor(api: httpx.Client) -> None:
    api.post("/executor/start")
    usage(api, tokens=500)
    budget = caps(api, max_tokens=100)
    assert budget["exceeded"] == ["max_tokens"]
    assert executor(api)["status"] == "paused"
    [exceeded] = events(api, "budget.exceeded")
    assert exceeded["payload"]["cap"] == "max_tokens"


def test_a_locked_entry_budget_cannot_be_reallocated(api: httpx.Client) -> None:
    [a] = create(api, task(budget_usd=3.0, budget_rounds=2))
    locked = api.post(f"/todo/entries/{a}/budget/lock")
    assert locked.status_code == 200, locked.text
    body = locked.json()["entry"]
    assert (body["budget_locked"], body["budget_usd"]) == (True, 3.0)
    again = api.post(f"/todo/entries/{a}/budget/lock")
    assert again.json()["entry"] == body  # idempotent: no second event
    assert len(events(api, "todo.budget_locked")) == 1

    error(api.patch(f"/todo/entries/{a}/budget", json={"budget_usd": 9}), 409, "BUDGET_LOCKED")
    error(api.patch(f"/todo/entries/{a}/rounds", json={"budget_rounds": 9}), 409, "BUDGET_LOCKED")
    after = entry(api, a)
    assert (after["budget_usd"], after["budget_rounds"]) == (3.0, 2)
    error(api.post("/todo/entries/entry_nope/budget/lock"), 404, "ENTRY_NOT_FOUND")


def test_a_worker_may_fail_the_entry_it_is_verifying(api: httpx.Client) -> None:
    [a] = create(api, task(files=["v.py"]))
    force(api)
    lease = claim(api, "w1")["lease"]
    verifying = api.patch(f"/todo/entries/{a}/status", json={"status": "verifying"})
    assert verifying.status_code == 200, verifying.text
    failed = lease_call(api, lease["id"], "fail", reason="acceptance not met")
    assert failed.status_code == 200, failed.text
    assert (failed.json()["entry"]["status"], failed.json()["entry"]["attempts"]) == ("pending", 1)
    assert api.get("/executor/locks").json() == {"locks": []}
