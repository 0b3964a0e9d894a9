"""The Master TODO (API.md part 3): the document, entries, their status machine, rounds,
priority, budget, spec, and the TODO's own event log."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from orchestrator.model import TERMINAL, TRANSITIONS
from tests.servers import ServerProcess
from tests.sse_client import events as event_frames
from tests.sse_client import open_stream

STATUSES = list(TRANSITIONS)
# The PATCHes that take a fresh (pending) entry to each status.
PATH_TO: dict[str, list[str]] = {
    "pending": [],
    "dispatched": ["dispatched"],
    "in_progress": ["dispatched", "in_progress"],
    "awaiting_input": ["dispatched", "in_progress", "awaiting_input"],
    "verifying": ["dispatched", "in_progress", "verifying"],
    "completed": ["dispatched", "in_progress", "completed"],
    "failed": ["dispatched", "failed"],
    "blocked": ["blocked"],
    "cancelled": ["cancelled"],
}
# API.md's Entry, then what this service adds.
ENTRY_FIELDS = {
    "id",
    "seq",
    "type",
    "content",
    "spec",
    "spec_frozen",
    "status",
    "priority",
    "depends_on",
    "children",
    "parallelizable",
    "parallel_group",
    "budget_usd",
    "spent_usd",
    "budget_rounds",
    "rounds_completed",
    "created_by",
    "assigned_to",
    "session_ids",
    "phase_id",
    "version",
    "files",
    "budget_locked",
    "tokens",
    "attempts",
    "report",
    "summary",
    "verification",
    "created_at",
    "updated_at",
}


def create(api: httpx.Client, *entries: dict[str, Any], **headers: str) -> list[dict[str, Any]]:
    response = api.post("/todo/entries", json={"entries": list(entries)}, headers=headers)
    assert response.status_code == 201, response.text
    created: list[dict[str, Any]] = response.json()["entries"]
    return created


def get_entry(api: httpx.Client, entry_id: str) -> dict[str, Any]:
    response = api.get(f"/todo/entries/{entry_id}")
    assert response.status_code == 200, response.text
    entry: dict[str, Any] = response.json()["entry"]
    return entry


def set_status(api: httpx.Client, entry_id: str, status: str, **fields: Any) -> dict[str, Any]:
    response = api.patch(f"/todo/entries/{entry_id}/status", json={"status": status, **fields})
    assert response.status_code == 200, response.text
    entry: dict[str, Any] = response.json()["entry"]
    assert entry["status"] == status
    return entry


def logged(api: httpx.Client) -> list[dict[str, Any]]:
    """Every event of the workspace, as the debug dump holds them."""
    events: list[dict[str, Any]] = api.get("/debug-dump").json()["events"]
    return events


def types(api: httpx.Client) -> list[str]:
    return [e["type"] for e in logged(api)]


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error's body, once its status and code are as documented."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    assert body["message"]
    return body


# The document


def test_a_fresh_workspace_has_an_empty_todo(api: httpx.Client) -> None:
    assert api.get("/todo").json() == {
        "id": None,
        "version": 0,
        "created_at": None,
        "project_context": "",
        "entries": [],
        "phases": [],
    }
    assert api.get("/todo/events").json() == {"events": []}


def test_created_entries_have_every_field_and_defaults(api: httpx.Client) -> None:
    given, minted = create(api, {"id": "plan-1", "content": "Plan it"}, {"content": "Do it"})
    assert set(given) == ENTRY_FIELDS
    assert given["id"] == "plan-1"
    assert minted["id"].startswith("entry_")
    assert [given["seq"], minted["seq"]] == [1, 2]
    assert given["created_at"] == given["updated_at"] > 0
    defaults = {
        k: v for k, v in given.items() if k not in ("id", "seq", "created_at", "updated_at")
    }
    assert defaults == {
        "type": "task",
        "content": "Plan it",
        "spec": {
            "requirements": "",
            "acceptance_criteria": [],
            "files_to_create": [],
            "files_to_modify": [],
            "patterns": "",
            "api_contract": "",
            "examples": "",
            "integration_points": "",
            "authored_by": None,
            "last_edited": None,
            "revision": 0,
        },
        "spec_frozen": False,
        "status": "pending",
        "priority": "medium",
        "depends_on": [],
        "children": [],
        "parallelizable": True,
        "parallel_group": None,
        "files": [],
        "budget_usd": None,
        "budget_locked": False,
        "spent_usd": 0.0,
        "tokens": 0,
        "budget_rounds": None,
        "rounds_completed": 0,
        "attempts": 0,
        "created_by": None,
        "assigned_to": None,
        "session_ids": [],
        "phase_id": None,
        "report": [],
        "summary": None,
        "verification": None,
        "version": 1,
    }
    assert get_entry(api, "plan-1") == given
    assert get_entry(api, minted["id"]) == minted

    todo = api.get("/todo").json()
    assert todo["id"].startswith("todo_")
    assert todo["created_at"] == given["created_at"]
    assert todo["entries"] == [given, minted]
    assert todo["version"] == 2  # the seq of the last domain event


def test_every_given_field_is_kept(api: httpx.Client) -> None:
    [entry] = create(
        api,
        {
            "id": "e1",
            "type": "bugfix",
            "content": "Fix the flaky test",
            "spec": {"requirements": "no flakes", "acceptance_criteria": ["100 green runs"]},
            "priority": "low",
            "parallelizable": False,
            "parallel_group": "tests",
            "files": ["b.py", "a.py", "b.py"],
            "budget_usd": 1.5,
            "budget_rounds": 3,
            "created_by": "planner",
        },
    )
    spec = entry["spec"]
    assert (spec["requirements"], spec["acceptance_criteria"]) == ("no flakes", ["100 green runs"])
    assert (spec["revision"], spec["last_edited"]) == (1, entry["created_at"])
    assert {k: entry[k] for k in ("type", "priority", "parallel_group", "files")} == {
        "type": "bugfix",
        "priority": "low",
        "parallel_group": "tests",
        "files": ["a.py", "b.py"],  # sorted, without repeats
    }
    assert (entry["parallelizable"], entry["budget_usd"], entry["budget_rounds"]) == (False, 1.5, 3)
    assert entry["created_by"] == "planner"


def test_entries_may_depend_on_each_other_within_a_batch(api: httpx.Client) -> None:
    a, b, c = create(
        api,
        {"id": "a", "content": "A", "children": ["b"]},
        {"id": "b", "content": "B", "depends_on": ["a"]},
        {"id": "c", "content": "C", "depends_on": ["a", "b"]},
    )
    assert (a["children"], b["depends_on"], c["depends_on"]) == (["b"], ["a"], ["a", "b"])
    [d] = create(api, {"content": "D", "depends_on": ["c"]})
    assert d["depends_on"] == ["c"]
    assert d["seq"] == 4


def test_patch_todo_sets_the_project_context(api: httpx.Client) -> None:
    api.patch("/config", json={"unrelated": True})  # seq 1: not a domain event
    response = api.patch("/todo", json={"project_context": "A CLI for the orchestrator"})
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["project_context"] == "A CLI for the orchestrator"
    assert document["id"].startswith("todo_")
    assert document == api.get("/todo").json()
    assert document["version"] == 2

    [entry] = create(api, {"content": "First"})
    again = api.patch("/todo", json={"project_context": "changed"}).json()
    assert (again["id"], again["created_at"]) == (document["id"], document["created_at"])
    assert again["entries"] == [entry]
    assert again == api.get("/todo").json()

    updates = [e["payload"]["todo"] for e in logged(api) if e["type"] == "todo.updated"]
    assert [u["project_context"] for u in updates] == ["A CLI for the orchestrator", "changed"]


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"", 400, "INVALID_JSON"),
        (b'{"project_context": ', 400, "INVALID_JSON"),
        (b"{}", 422, "VALIDATION_FAILED"),
        (b'{"project_context": 7}', 422, "VALIDATION_FAILED"),
        (b'{"project_context": "x", "id": "todo_1"}', 422, "VALIDATION_FAILED"),
        (b'{"project_context": "%s"}' % (b"x" * 65_537), 422, "VALIDATION_FAILED"),
    ],
)
def test_patch_todo_validates(api: httpx.Client, content: bytes, status: int, code: str) -> None:
    error(api.patch("/todo", content=content), status, code)
    assert api.get("/todo").json()["project_context"] == ""
    assert logged(api) == []


# Creating: failures


def test_unknown_references_are_422_naming_each_path(api: httpx.Client) -> None:
    create(api, {"id": "known", "content": "K"})
    response = api.post(
        "/todo/entries",
        json={
            "entries": [
                {"id": "x", "content": "X", "depends_on": ["known", "ghost"]},
                {"id": "y", "content": "Y", "children": ["y"], "phase_id": "phs_nope"},
            ]
        },
    )
    body = error(response, 422, "VALIDATION_FAILED")
    assert body["details"] == {
        "problems": [
            {"path": "$.entries[0].depends_on[1]", "id": "ghost"},
            {"path": "$.entries[1].children[0]", "id": "y"},
            {"path": "$.entries[1].phase_id", "id": "phs_nope"},
        ]
    }
    assert "$.entries[0].depends_on[1]" in body["message"]
    assert [e["id"] for e in api.get("/todo").json()["entries"]] == ["known"]


def test_an_entry_may_not_depend_on_itself(api: httpx.Client) -> None:
    response = api.post(
        "/todo/entries", json={"entries": [{"id": "me", "content": "M", "depends_on": ["me"]}]}
    )
    assert error(response, 422, "VALIDATION_FAILED")["details"] == {
        "problems": [{"path": "$.entries[0].depends_on[0]", "id": "me"}]
    }


def test_a_dependency_cycle_is_422_cycle(api: httpx.Client) -> None:
    create(api, {"id": "root", "content": "R"})
    response = api.post(
        "/todo/entries",
        json={
            "entries": [
                {"id": "a", "content": "A", "depends_on": ["root", "c"]},
                {"id": "b", "content": "B", "depends_on": ["a"]},
                {"id": "c", "content": "C", "depends_on": ["b"]},
            ]
        },
    )
    body = error(response, 422, "CYCLE")
    cycle = body["details"]["cycle"]
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["a", "b", "c"]
    assert " -> ".join(cycle) in body["message"]
    assert [e["id"] for e in api.get("/todo").json()["entries"]] == ["root"]


def test_a_taken_id_is_409_entry_exists(api: httpx.Client) -> None:
    create(api, {"id": "dup", "content": "first"})
    taken = api.post("/todo/entries", json={"entries": [{"id": "dup", "content": "again"}]})
    assert error(taken, 409, "ENTRY_EXISTS")["details"] == {"ids": ["dup"]}
    twice = api.post(
        "/todo/entries",
        json={"entries": [{"id": "new", "content": "1"}, {"id": "new", "content": "2"}]},
    )
    assert error(twice, 409, "ENTRY_EXISTS")["details"] == {"ids": ["new"]}
    assert [e["content"] for e in api.get("/todo").json()["entries"]] == ["first"]
    assert types(api) == ["todo.created"]


@pytest.mark.parametrize(
    ("content", "status", "code", "fragment"),
    [
        (b"", 400, "INVALID_JSON", "empty"),
        (b"   ", 400, "INVALID_JSON", "empty"),
        (b'{"entries": [', 400, "INVALID_JSON", "not valid JSON"),
        (b"[]", 422, "VALIDATION_FAILED", "Expected `object`"),
        (b"{}", 422, "VALIDATION_FAILED", "entries"),
        (b'{"entries": []}', 422, "VALIDATION_FAILED", "length >= 1"),
        (b'{"entries": [{}]}', 422, "VALIDATION_FAILED", "content"),
        (b'{"entries": [{"content": "x"}], "more": 1}', 422, "VALIDATION_FAILED", "more"),
    ],
)
def test_malformed_entry_bodies_are_rejected(
    api: httpx.Client, content: bytes, status: int, code: str, fragment: str
) -> None:
    response = api.post("/todo/entries", content=content)
    assert fragment in error(response, status, code)["message"]
    assert api.get("/todo").json()["entries"] == []
    assert logged(api) == []


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"content": ""}, "$.entries[1].content"),
        ({"colour": 1}, "colour"),
        ({"id": "a/b"}, "$.entries[1].id"),
        ({"id": "x" * 65}, "$.entries[1].id"),
        ({"status": "completed"}, "status"),
        ({"priority": 1}, "$.entries[1].priority"),
        ({"priority": "urgent"}, "$.entries[1].priority"),
        ({"budget_usd": -1}, "$.entries[1].budget_usd"),
        ({"budget_rounds": -1}, "$.entries[1].budget_rounds"),
        ({"depends_on": ["bad id"]}, "$.entries[1].depends_on[0]"),
        ({"files": [""]}, "$.entries[1].files[0]"),
        ({"spec": {"acceptance_criteria": [1]}}, "$.entries[1].spec.acceptance_criteria[0]"),
        ({"spec": {"text": "the old shape"}}, "text"),
    ],
)
def test_invalid_entry_fields_are_422_and_fail_the_whole_batch(
    api: httpx.Client, fields: dict[str, Any], fragment: str
) -> None:
    body = {"entries": [{"content": "fine"}, {"content": "x", **fields}]}
    response = api.post("/todo/entries", json=body)
    assert fragment in error(response, 422, "VALIDATION_FAILED")["message"]
    assert api.get("/todo").json()["entries"] == []
    assert logged(api) == []


def test_oversized_requests_are_rejected(api: httpx.Client) -> None:
    too_long = api.post("/todo/entries", json={"entries": [{"content": "x" * 16_385}]})
    assert "$.entries[0].content" in error(too_long, 422, "VALIDATION_FAILED")["message"]
    too_many = api.post("/todo/entries", json={"entries": [{"content": "x"}] * 501})
    assert "length <= 500" in error(too_many, 422, "VALIDATION_FAILED")["message"]
    too_big = api.post("/todo/entries", json={"entries": [{"content": "x" * (1 << 20)}]})
    assert error(too_big, 413, "PAYLOAD_TOO_LARGE")["details"] == {"limit": 1 << 20}
    assert logged(api) == []

    most = create(api, *[{"content": f"entry {i}"} for i in range(500)])
    assert [e["seq"] for e in most] == list(range(1, 501))
    assert len({e["id"] for e in most}) == 500


def test_an_idempotent_retry_returns_the_first_entries_and_appends_nothing(
    api: httpx.Client,
) -> None:
    body = {"entries": [{"content": "minted"}, {"id": "given", "content": "given"}]}
    first = api.post("/todo/entries", json=body, headers={"Idempotency-Key": "plan-v1"})
    assert first.status_code == 201
    retry = api.post("/todo/entries", json=body, headers={"Idempotency-Key": "plan-v1"})
    assert retry.status_code == 201
    assert retry.json() == first.json()
    assert api.get("/todo").json()["entries"] == first.json()["entries"]
    assert types(api) == ["todo.created", "todo.created"]

    # Without the key the same body is a new request: a taken id.
    error(api.post("/todo/entries", json=body), 409, "ENTRY_EXISTS")
    other = {"entries": [{"content": "something else"}]}
    reused = api.post("/todo/entries", json=other, headers={"Idempotency-Key": "plan-v1"})
    error(reused, 422, "IDEMPOTENCY_KEY_REUSED")
    bad_key = api.post("/todo/entries", json=other, headers={"Idempotency-Key": "with space"})
    error(bad_key, 400, "INVALID_INPUT")
    assert len(logged(api)) == 2


# Reading and deleting one entry


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("DELETE", "", None),
        ("PATCH", "/status", {"status": "blocked"}),
        ("PATCH", "/rounds", {"budget_rounds": 2}),
        ("PATCH", "/priority", {"priority": "high"}),
        ("PATCH", "/budget", {"budget_usd": 2}),
        ("POST", "/budget/lock", None),
        ("GET", "/spec", None),
        ("PUT", "/spec", {"requirements": "t"}),
        ("POST", "/spec/freeze", None),
    ],
)
def test_an_unknown_entry_is_404_and_a_bad_id_400(
    api: httpx.Client, method: str, suffix: str, body: dict[str, Any] | None
) -> None:
    missing = api.request(method, f"/todo/entries/entry_missing{suffix}", json=body)
    assert error(missing, 404, "ENTRY_NOT_FOUND")["details"] == {"entryID": "entry_missing"}
    bad = api.request(method, f"/todo/entries/bad.id{suffix}", json=body)
    assert error(bad, 400, "INVALID_ID")["details"] == {"parameter": "entryID"}
    assert logged(api) == []


def test_deleting_an_entry(api: httpx.Client) -> None:
    [keep, _] = create(api, {"content": "keep"}, {"id": "gone", "content": "gone"})
    response = api.delete("/todo/entries/gone")
    assert response.status_code == 200
    assert response.json() == {"deleted": True, "entryID": "gone"}
    error(api.get("/todo/entries/gone"), 404, "ENTRY_NOT_FOUND")
    assert api.get("/todo").json()["entries"] == [keep]
    assert logged(api)[-1] == {
        "seq": 3,
        "type": "todo.deleted",
        "payload": {"deleted": ["gone"], "entryID": "gone"},
    }
    error(api.delete("/todo/entries/gone"), 404, "ENTRY_NOT_FOUND")
    # Seqs are never reused.
    assert create(api, {"content": "later"})[0]["seq"] == 3


def test_deleting_an_entry_others_depend_on_needs_force(api: httpx.Client) -> None:
    create(
        api,
        {"id": "base", "content": "base"},
        {"id": "user", "content": "user", "depends_on": ["base"]},
        {"id": "parent", "content": "parent", "children": ["base"]},
    )
    refused = api.delete("/todo/entries/base")
    assert error(refused, 409, "ENTRY_HAS_DEPENDENTS")["details"] == {
        "entryID": "base",
        "dependents": ["user"],
    }
    assert "force=true" in refused.json()["error"]["message"]
    assert get_entry(api, "base")["id"] == "base"

    assert api.delete("/todo/entries/base", params={"force": "true"}).json() == {
        "deleted": True,
        "entryID": "base",
    }
    user, parent = get_entry(api, "user"), get_entry(api, "parent")
    assert (user["depends_on"], user["version"]) == ([], 2)
    assert (parent["children"], parent["version"]) == ([], 2)
    event = logged(api)[-1]
    assert event["type"] == "todo.deleted"
    assert event["payload"]["forced"] is True
    assert event["payload"]["entries"] == [user, parent]
    # Only dependents block a delete: being listed in a parent's children does not.
    create(api, {"id": "kid", "content": "kid"})
    create(api, {"id": "mom", "content": "mom", "children": ["kid"]})
    assert api.delete("/todo/entries/kid").json() == {"deleted": True, "entryID": "kid"}
    assert get_entry(api, "mom")["children"] == []
    assert "forced" not in logged(api)[-1]["payload"]  # false is the default, omitted


def test_deleting_an_active_entry_needs_force(api: httpx.Client) -> None:
    create(api, {"id": "busy", "content": "busy"})
    for status in PATH_TO["awaiting_input"]:
        set_status(api, "busy", status)
        refused = api.delete("/todo/entries/busy")
        assert error(refused, 409, "ENTRY_ACTIVE")["details"] == {
            "entryID": "busy",
            "status": status,
        }
    assert api.delete("/todo/entries/busy?force=1").json()["deleted"] is True
    assert api.get("/todo").json()["entries"] == []


def test_delete_parameters_are_checked(api: httpx.Client) -> None:
    create(api, {"id": "e", "content": "e"})
    assert error(api.delete("/todo/entries/e?force=maybe"), 400, "INVALID_INPUT")["details"] == {
        "parameter": "force"
    }
    assert error(api.delete("/todo/entries/e?cascade=true"), 400, "INVALID_INPUT")["details"] == {
        "parameter": "cascade"
    }
    assert get_entry(api, "e")["status"] == "pending"


def test_force_deleting_a_claimed_entry_releases_its_lease_and_locks(api: httpx.Client) -> None:
    create(api, {"id": "w", "content": "work", "files": ["src/a.py"]})
    set_status(api, "w", "dispatched")
    claim = api.post("/executor/claim", json={"sessionID": "worker-1"})
    assert claim.status_code == 200, claim.text
    lease_id = claim.json()["lease"]["id"]
    assert [lock["file"] for lock in api.get("/executor/locks").json()["locks"]] == ["src/a.py"]

    error(api.delete("/todo/entries/w"), 409, "ENTRY_ACTIVE")
    assert api.delete("/todo/entries/w?force=true").status_code == 200
    assert api.get("/executor/locks").json() == {"locks": []}
    assert api.get("/executor/workers").json() == {"workers": []}
    tail = logged(api)[-3:]
    assert [e["type"] for e in tail] == ["lock.released", "lease.released", "todo.deleted"]
    assert tail[1]["payload"]["outcome"] == "revoked"
    assert tail[1]["payload"]["leaseID"] == lease_id


# The status machine


@pytest.mark.parametrize("start", STATUSES)
def test_every_status_moves_exactly_as_the_table_says(api: httpx.Client, start: str) -> None:
    ids = [e["id"] for e in create(api, *[{"content": f"to {s}"} for s in STATUSES])]
    for entry_id in ids:
        for status in PATH_TO[start]:
            set_status(api, entry_id, status)
    for entry_id, target in zip(ids, STATUSES, strict=True):
        before = get_entry(api, entry_id)
        assert before["status"] == start
        response = api.patch(f"/todo/entries/{entry_id}/status", json={"status": target})
        if target == start:  # no change, no event
            assert response.json() == {"entry": before}
            continue
        if target not in TRANSITIONS[start]:
            body = error(response, 409, "ILLEGAL_TRANSITION")
            assert body["details"] == {
                "from": start,
                "to": target,
                "allowed": sorted(TRANSITIONS[start]),
            }
            assert get_entry(api, entry_id) == before
            continue
        assert response.status_code == 200, response.text
        after = response.json()["entry"]
        assert after == get_entry(api, entry_id)
        assert (after["status"], after["version"]) == (target, before["version"] + 1)
        event = logged(api)[-1]
        assert event["payload"]["entryID"] == entry_id
        assert event["payload"]["entries"] == [after]
        if target in ("completed", "failed"):
            assert event["type"] == f"todo.{target}"
        else:
            assert event["type"] == "todo.status_changed"
            assert (event["payload"]["from"], event["payload"]["to"]) == (start, target)


def test_the_documented_path_is_legal_and_terminal_statuses_never_exit(api: httpx.Client) -> None:
    assert {"completed", "cancelled"} == TERMINAL
    create(api, {"id": "done", "content": "d"}, {"id": "dropped", "content": "x"})
    for status in ["dispatched", "in_progress", "verifying", "completed"]:
        set_status(api, "done", status)
    set_status(api, "dropped", "cancelled")
    for entry_id, final in (("done", "completed"), ("dropped", "cancelled")):
        for target in STATUSES:
            if target == final:
                continue
            response = api.patch(f"/todo/entries/{entry_id}/status", json={"status": target})
            body = error(response, 409, "ILLEGAL_TRANSITION")
            assert body["details"] == {"from": final, "to": target, "allowed": []}
            assert f"{final} is final" in body["message"]


def test_status_events_carry_the_reason(api: httpx.Client) -> None:
    create(api, {"id": "e", "content": "e"}, {"id": "f", "content": "f"})
    set_status(api, "e", "blocked", reason="waiting on the design review")
    set_status(api, "f", "dispatched")
    set_status(api, "f", "failed", reason="the build broke")
    blocked, _, failed = logged(api)[-3:]
    assert blocked["type"] == "todo.status_changed"
    assert blocked["payload"]["reason"] == "waiting on the design review"
    assert failed["type"] == "todo.failed"
    assert failed["payload"]["reason"] == "the build broke"
    assert api.get("/todo/events?since_seq=2").json()["events"] == logged(api)[2:]


@pytest.mark.parametrize(
    "body",
    [{}, {"status": "done"}, {"status": "blocked", "version": "1"}, {"status": "blocked", "x": 1}],
)
def test_bad_status_bodies_are_422(api: httpx.Client, body: dict[str, Any]) -> None:
    create(api, {"id": "e", "content": "e"})
    error(api.patch("/todo/entries/e/status", json=body), 422, "VALIDATION_FAILED")
    assert get_entry(api, "e")["version"] == 1


def test_leaving_work_ends_the_workers_lease(api: httpx.Client) -> None:
    create(api, {"id": "e", "content": "e", "files": ["a.py", "b.py"]})
    set_status(api, "e", "dispatched")
    claimed = api.post("/executor/claim", json={"sessionID": "w-1"}).json()
    assert claimed["entry"]["status"] == "in_progress"
    assert claimed["entry"]["assigned_to"] == "w-1"

    moved = set_status(api, "e", "blocked", reason="needs a human")
    assert moved["assigned_to"] is None
    assert moved["session_ids"] == ["w-1"]
    assert api.get("/executor/locks").json() == {"locks": []}
    assert api.get("/executor/workers").json() == {"workers": []}
    released, lease_end, changed = logged(api)[-3:]
    assert (released["type"], released["payload"]["files"]) == ("lock.released", ["a.py", "b.py"])
    assert released["payload"]["reason"] == "needs a human"
    assert lease_end["type"] == "lease.released"
    assert lease_end["payload"]["leaseID"] == claimed["lease"]["id"]
    assert changed["type"] == "todo.status_changed"


# Versions


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("PATCH", "/status", {"status": "blocked"}),
        ("PATCH", "/rounds", {"budget_rounds": 4}),
        ("PATCH", "/priority", {"priority": "critical"}),
        ("PATCH", "/budget", {"budget_usd": 4.0}),
        ("PUT", "/spec", {"requirements": "new"}),
    ],
)
def test_a_stale_version_is_409_and_the_current_one_wins(
    api: httpx.Client, method: str, suffix: str, body: dict[str, Any]
) -> None:
    create(api, {"id": "e", "content": "e"})
    api.patch("/todo/entries/e/priority", json={"priority": "high"})  # version 2
    stale = api.request(method, f"/todo/entries/e{suffix}", json={**body, "version": 1})
    body_ = error(stale, 409, "STALE_VERSION")
    assert body_["details"] == {"expected": 1, "current": 2}
    assert "read it again" in body_["message"]
    assert get_entry(api, "e")["version"] == 2
    fresh = api.request(method, f"/todo/entries/e{suffix}", json={**body, "version": 2})
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["entry"]["version"] == 3


@pytest.fixture
def replicas(
    server: ServerProcess, make_server: Callable[..., ServerProcess], workspace: str
) -> list[str]:
    """The workspace's base URL on two API replicas sharing one Redis."""
    return [server.workspace_url(workspace), make_server().workspace_url(workspace)]


def fan_out(
    replicas: list[str], count: int, request: Callable[[httpx.Client, int], httpx.Response]
) -> list[httpx.Response]:
    """``count`` requests at once, alternating between the replicas."""

    def one(n: int) -> httpx.Response:
        with httpx.Client(base_url=replicas[n % len(replicas)], timeout=10) as client:
            return request(client, n)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_concurrent_writes_on_two_replicas_stay_consistent(
    api: httpx.Client, replicas: list[str]
) -> None:
    created = fan_out(
        replicas,
        16,
        lambda c, n: c.post("/todo/entries", json={"entries": [{"content": f"c{n}"}] * 2}),
    )
    assert {r.status_code for r in created} == {201}
    entries = api.get("/todo").json()["entries"]
    assert [e["seq"] for e in entries] == list(range(1, 33))
    assert len({e["id"] for e in entries}) == 32
    # Each request's entries are consecutive: a batch is appended whole.
    for response in created:
        first, second = response.json()["entries"]
        assert second["seq"] == first["seq"] + 1

    raced = fan_out(
        replicas,
        8,
        lambda c, n: c.post("/todo/entries", json={"entries": [{"id": "one", "content": f"{n}"}]}),
    )
    assert sorted(r.status_code for r in raced) == [201] + [409] * 7
    assert {r.json()["error"]["code"] for r in raced if r.status_code == 409} == {"ENTRY_EXISTS"}

    moved = fan_out(
        replicas,
        8,
        lambda c, n: c.patch("/todo/entries/one/status", json={"status": "blocked", "version": 1}),
    )
    assert sorted(r.status_code for r in moved) == [200] + [409] * 7
    assert {r.json()["error"]["code"] for r in moved if r.status_code == 409} == {"STALE_VERSION"}
    one = get_entry(api, "one")
    assert (one["status"], one["version"]) == ("blocked", 2)
    assert types(api).count("todo.status_changed") == 1


# Rounds, priority, budget


def test_rounds_priority_and_budget_are_set(api: httpx.Client) -> None:
    create(api, {"id": "e", "content": "e", "budget_rounds": 2, "budget_usd": 1.0})
    rounds = api.patch("/todo/entries/e/rounds", json={"budget_rounds": 5}).json()["entry"]
    assert (rounds["budget_rounds"], rounds["version"]) == (5, 2)
    priority = api.patch("/todo/entries/e/priority", json={"priority": "low"}).json()["entry"]
    assert (priority["priority"], priority["version"]) == ("low", 3)
    budget = api.patch("/todo/entries/e/budget", json={"budget_usd": 12.5}).json()["entry"]
    assert (budget["budget_usd"], budget["version"]) == (12.5, 4)
    assert get_entry(api, "e") == budget

    unbounded = api.patch("/todo/entries/e/rounds", json={"budget_rounds": None}).json()["entry"]
    assert unbounded["budget_rounds"] is None
    no_cap = api.patch("/todo/entries/e/budget", json={"budget_usd": None}).json()["entry"]
    assert no_cap["budget_usd"] is None

    assert types(api)[1:] == [
        "todo.rounds_changed",
        "todo.priority_changed",
        "todo.budget_changed",
        "todo.rounds_changed",
        "todo.budget_changed",
    ]
    assert [e["payload"]["entries"][0]["version"] for e in logged(api)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("suffix", "body", "fragment"),
    [
        ("/rounds", {}, "budget_rounds"),
        ("/rounds", {"budget_rounds": -1}, "$.budget_rounds"),
        ("/rounds", {"budget_rounds": 1.5}, "$.budget_rounds"),
        ("/priority", {"priority": 1}, "$.priority"),
        ("/priority", {"priority": "High"}, "$.priority"),
        ("/priority", {"priority": None}, "$.priority"),
        ("/budget", {"budget_usd": -0.01}, "$.budget_usd"),
        ("/budget", {"budget_usd": "5"}, "$.budget_usd"),
        ("/budget", {"usd": 5}, "usd"),
    ],
)
def test_bad_rounds_priority_and_budget_are_422(
    api: httpx.Client, suffix: str, body: dict[str, Any], fragment: str
) -> None:
    create(api, {"id": "e", "content": "e"})
    response = api.patch(f"/todo/entries/e{suffix}", json=body)
    assert fragment in error(response, 422, "VALIDATION_FAILED")["message"]
    assert get_entry(api, "e")["version"] == 1


def test_a_locked_budget_cannot_be_reallocated(api: httpx.Client) -> None:
    create(api, {"id": "e", "content": "e", "budget_usd": 3.0, "budget_rounds": 2})
    locked = api.post("/todo/entries/e/budget/lock")
    assert locked.status_code == 200
    entry = locked.json()["entry"]
    assert (entry["budget_locked"], entry["version"]) == (True, 2)
    assert logged(api)[-1]["type"] == "todo.budget_locked"

    for suffix, body in (("/rounds", {"budget_rounds": 9}), ("/budget", {"budget_usd": 9.0})):
        refused = api.patch(f"/todo/entries/e{suffix}", json=body)
        assert error(refused, 409, "BUDGET_LOCKED")["details"] == {"entryID": "e"}
    assert get_entry(api, "e") == entry

    # Locking again changes nothing; the priority is not part of the budget.
    assert api.post("/todo/entries/e/budget/lock").json() == {"entry": entry}
    assert api.patch("/todo/entries/e/priority", json={"priority": "high"}).status_code == 200
    assert types(api) == ["todo.created", "todo.budget_locked", "todo.priority_changed"]


# Spec


def test_spec_is_read_replaced_and_frozen(api: httpx.Client) -> None:
    v1 = {"requirements": "v1", "acceptance_criteria": ["a"], "authored_by": "planner"}
    created = create(api, {"id": "e", "content": "e", "spec": v1})[0]
    read = api.get("/todo/entries/e/spec").json()
    assert read == {"spec": created["spec"], "frozen": False, "version": 1}
    assert {k: read["spec"][k] for k in (*v1, "revision")} == {**v1, "revision": 1}
    assert read["spec"]["last_edited"] == created["created_at"]

    v2 = {
        "requirements": "v2",
        "acceptance_criteria": ["a", "b"],
        "files_to_create": ["src/client.ts"],
        "files_to_modify": ["package.json"],
        "patterns": "p",
        "api_contract": "c",
        "examples": "x",
        "integration_points": "i",
    }
    put = api.put("/todo/entries/e/spec", json=v2)
    assert put.status_code == 200
    spec = put.json()["entry"]["spec"]
    # No author in the body and no token: nobody is named.
    assert spec == {**v2, "authored_by": None, "last_edited": spec["last_edited"], "revision": 2}
    assert spec["last_edited"] >= created["created_at"]
    assert api.get("/todo/entries/e/spec").json() == {"spec": spec, "frozen": False, "version": 2}

    # The spec as read, sent back unchanged (the server's fields too): no change, no event.
    again = api.put("/todo/entries/e/spec", json=spec)
    assert again.json()["entry"]["spec"] == spec
    # PUT replaces the whole spec; the server's fields sent are ignored.
    v3 = api.put(
        "/todo/entries/e/spec", json={"requirements": "v3", "revision": 99, "last_edited": 1}
    ).json()["entry"]["spec"]
    assert (v3["requirements"], v3["acceptance_criteria"], v3["files_to_create"]) == ("v3", [], [])
    assert (v3["revision"], v3["last_edited"] >= spec["last_edited"]) == (3, True)

    frozen = api.post("/todo/entries/e/spec/freeze")
    assert frozen.status_code == 200
    assert (frozen.json()["entry"]["spec_frozen"], frozen.json()["entry"]["version"]) == (True, 4)
    assert api.get("/todo/entries/e/spec").json()["frozen"] is True
    refused = api.put("/todo/entries/e/spec", json={"requirements": "v4"})
    assert error(refused, 409, "SPEC_FROZEN")["details"] == {"entryID": "e"}
    assert api.get("/todo/entries/e/spec").json()["spec"] == v3
    assert api.post("/todo/entries/e/spec/freeze").json() == frozen.json()

    assert types(api) == [
        "todo.created",
        "todo.spec_updated",
        "todo.spec_updated",
        "todo.spec_frozen",
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"requirements": 1},
        {"acceptance_criteria": "a"},
        {"acceptance_criteria": ["a"] * 65},
        {"files_to_create": [""]},
        {"revision": "1"},
        {"spec": {"requirements": "nested"}},
        {"text": "the old shape", "acceptance": []},
    ],
)
def test_bad_specs_are_422(api: httpx.Client, body: dict[str, Any]) -> None:
    create(api, {"id": "e", "content": "e"})
    error(api.put("/todo/entries/e/spec", json=body), 422, "VALIDATION_FAILED")
    error(api.put("/todo/entries/e/spec", content=b"{"), 400, "INVALID_JSON")
    assert get_entry(api, "e")["version"] == 1


# The TODO event log


def test_todo_events_are_the_todos_own_log(api: httpx.Client) -> None:
    api.post("/phases", json={"id": "p", "name": "P"})  # not a todo.* event
    create(api, {"id": "a", "content": "a"}, {"id": "b", "content": "b"})
    api.patch("/todo/entries/a/priority", json={"priority": "critical"})
    api.delete("/todo/entries/b")

    everything = api.get("/todo/events").json()["events"]
    assert [(e["seq"], e["type"]) for e in everything] == [
        (2, "todo.created"),
        (3, "todo.created"),
        (4, "todo.priority_changed"),
        (5, "todo.deleted"),
    ]
    assert everything == logged(api)[1:]

    assert api.get("/todo/events?since_seq=3").json()["events"] == everything[2:]
    assert api.get("/todo/events?limit=2").json()["events"] == everything[:2]
    assert api.get("/todo/events?since_seq=2&limit=1").json()["events"] == everything[1:2]
    assert api.get("/todo/events?since_seq=5").json() == {"events": []}
    resumed = api.get("/todo/events", headers={"Last-Event-ID": "4"})
    assert resumed.json()["events"] == everything[3:]


@pytest.mark.parametrize(
    "query",
    ["since_seq=-1", "since_seq=abc", "since_seq=", "limit=0", "limit=1001", "limit=x", "page=2"],
)
def test_todo_events_parameters_are_checked(api: httpx.Client, query: str) -> None:
    response = api.get(f"/todo/events?{query}")
    assert error(response, 400, "INVALID_INPUT")["details"]["parameter"] == query.split("=")[0]


# Everything on /events, in the dump, and gone after a purge


def test_every_change_is_an_event_on_the_events_stream(api: httpx.Client) -> None:
    create(api, {"id": "a", "content": "a"}, {"id": "b", "content": "b", "depends_on": ["a"]})
    api.patch("/todo", json={"project_context": "ctx"})
    set_status(api, "a", "blocked")
    api.patch("/todo/entries/a/rounds", json={"budget_rounds": 2})
    api.patch("/todo/entries/a/priority", json={"priority": "high"})
    api.patch("/todo/entries/a/budget", json={"budget_usd": 2})
    api.post("/todo/entries/a/budget/lock")
    api.put("/todo/entries/a/spec", json={"requirements": "s"})
    api.post("/todo/entries/a/spec/freeze")
    api.delete("/todo/entries/a?force=true")

    dumped = logged(api)
    assert [e["type"] for e in dumped] == [
        "todo.created",
        "todo.created",
        "todo.updated",
        "todo.status_changed",
        "todo.rounds_changed",
        "todo.priority_changed",
        "todo.budget_changed",
        "todo.budget_locked",
        "todo.spec_updated",
        "todo.spec_frozen",
        "todo.deleted",
    ]
    assert [e["seq"] for e in dumped] == list(range(1, 12))
    with open_stream(api, "/events", since_seq=0) as stream:
        frames = event_frames(stream.until_seq(11))
    assert [f.json() for f in frames] == dumped
    assert [(f.seq, f.event) for f in frames] == [(e["seq"], e["type"]) for e in dumped]


def test_purge_clears_the_todo(api: httpx.Client) -> None:
    create(api, {"id": "a", "content": "a"}, {"content": "b"})
    api.patch("/todo", json={"project_context": "ctx"})
    old_id = api.get("/todo").json()["id"]
    assert api.post("/purge").status_code == 200

    todo = api.get("/todo").json()
    assert (todo["id"], todo["entries"], todo["project_context"]) == (None, [], "")
    error(api.get("/todo/entries/a"), 404, "ENTRY_NOT_FOUND")
    assert api.get("/todo/events").json() == {"events": []}
    assert types(api) == ["orchestration.purged"]

    # A new TODO starts over, with ids that were taken before the purge free again.
    [again] = create(api, {"id": "a", "content": "a again"})
    assert again["seq"] == 1
    fresh = api.get("/todo").json()
    assert fresh["id"] != old_id
    assert fresh["entries"] == [again]
    assert fresh["version"] == 5
