"""Phases, their verify and memory, prompt dispatch, and sessions (API.md part 5)."""

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from orchestrator.model import PHASE_TRANSITIONS
from tests.servers import ServerProcess
from tests.sse_client import events as event_frames
from tests.sse_client import open_stream

PHASE_STATUSES = list(PHASE_TRANSITIONS)
PATH_TO: dict[str, list[str]] = {
    "pending": [],
    "active": ["active"],
    "completed": ["active", "completed"],
    "failed": ["active", "failed"],
}


def add_phase(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = api.post("/phases", json={"name": "Phase", **fields})
    assert response.status_code == 201, response.text
    phase: dict[str, Any] = response.json()["phase"]
    return phase


def get_phase(api: httpx.Client, phase_id: str) -> dict[str, Any]:
    response = api.get(f"/phases/{phase_id}")
    assert response.status_code == 200, response.text
    phase: dict[str, Any] = response.json()["phase"]
    return phase


def criteria(*given: str) -> dict[str, Any]:
    return {"acceptance_criteria": list(given)}


def patch_phase(api: httpx.Client, phase_id: str, **fields: Any) -> dict[str, Any]:
    response = api.patch(f"/phases/{phase_id}", json=fields)
    assert response.status_code == 200, response.text
    phase: dict[str, Any] = response.json()["phase"]
    return phase


def statuses(api: httpx.Client) -> dict[str, str]:
    return {p["id"]: p["status"] for p in api.get("/phases").json()["phases"]}


def add_entries(api: httpx.Client, *entries: dict[str, Any]) -> None:
    response = api.post("/todo/entries", json={"entries": list(entries)})
    assert response.status_code == 201, response.text


def set_status(api: httpx.Client, entry_id: str, *path: str) -> None:
    for status in path:
        response = api.patch(f"/todo/entries/{entry_id}/status", json={"status": status})
        assert response.status_code == 200, response.text


def work(api: httpx.Client, entry_id: str, session: str, report: list[dict[str, Any]]) -> None:
    """A worker session claims the entry and completes it with its report."""
    set_status(api, entry_id, "dispatched")
    claim = api.post("/executor/claim", json={"sessionID": session})
    assert claim.status_code == 200, claim.text
    assert claim.json()["entry"]["id"] == entry_id
    lease = claim.json()["lease"]["id"]
    done = api.post(f"/executor/leases/{lease}/complete", json={"report": report})
    assert done.status_code == 200, done.text
    assert done.json()["entry"]["report"] == [{"evidence": "", **c} for c in report]


def logged(api: httpx.Client) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = api.get("/debug-dump").json()["events"]
    return events


def types(api: httpx.Client) -> list[str]:
    return [e["type"] for e in logged(api)]


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    assert body["message"]
    return body


def passed(*criteria: str) -> list[dict[str, Any]]:
    return [{"criterion": c, "passed": True} for c in criteria]


# Creating, reading, listing


def test_a_created_phase_has_every_field(api: httpx.Client) -> None:
    assert api.get("/phases").json() == {"phases": []}
    phase = add_phase(api, name="Design", description="Settle the API", phase_rounds=3)
    assert phase["id"].startswith("phs_")
    assert phase["created_at"] == phase["updated_at"] > 0
    assert {k: v for k, v in phase.items() if k not in ("id", "created_at", "updated_at")} == {
        "name": "Design",
        "description": "Settle the API",
        "seq": 0,
        "status": "pending",
        "phase_rounds": 3,
        "rounds_completed": 0,
        "container_id": None,
        "session_id": None,
        "memory_count": 0,
        "verification": None,
        "version": 1,
    }
    assert get_phase(api, phase["id"]) == phase
    assert api.get("/phases").json() == {"phases": [phase]}
    assert api.get("/todo").json()["phases"] == [phase]
    assert logged(api) == [
        {"seq": 1, "type": "phase.created", "payload": {"phases": [phase], "phaseID": phase["id"]}}
    ]


def test_phases_are_listed_in_order(api: httpx.Client) -> None:
    build = add_phase(api, id="build", name="Build")  # seq 0
    ship = add_phase(api, id="ship", name="Ship", seq=10)
    test = add_phase(api, id="test", name="Test", seq=5)
    later = add_phase(api, id="later", name="Later")  # after the highest seq
    assert later["seq"] == 11
    listed = api.get("/phases").json()["phases"]
    assert [p["id"] for p in listed] == ["build", "test", "ship", "later"]
    assert listed == [build, test, ship, later]
    assert api.get("/todo").json()["phases"] == listed


def test_a_phase_id_is_taken_once(api: httpx.Client) -> None:
    add_phase(api, id="p1")
    again = api.post("/phases", json={"id": "p1", "name": "Again"})
    assert error(again, 409, "PHASE_EXISTS")["details"] == {"phaseID": "p1"}
    assert get_phase(api, "p1")["name"] == "Phase"
    assert types(api) == ["phase.created"]


@pytest.mark.parametrize(
    ("content", "status", "code", "fragment"),
    [
        (b"", 400, "INVALID_JSON", "empty"),
        (b"{", 400, "INVALID_JSON", "not valid JSON"),
        (b"{}", 422, "VALIDATION_FAILED", "name"),
        (b'{"name": ""}', 422, "VALIDATION_FAILED", "$.name"),
        (b'{"name": "P", "status": "done"}', 422, "VALIDATION_FAILED", "$.status"),
        (b'{"name": "P", "phase_rounds": 0}', 422, "VALIDATION_FAILED", "$.phase_rounds"),
        (b'{"name": "P", "seq": -1}', 422, "VALIDATION_FAILED", "$.seq"),
        (b'{"name": "P", "order": 0}', 422, "VALIDATION_FAILED", "order"),
        (b'{"name": "P", "container_id": ""}', 422, "VALIDATION_FAILED", "$.container_id"),
        (b'{"name": "P", "session_id": "a b"}', 422, "VALIDATION_FAILED", "$.session_id"),
        (b'{"name": "P", "id": "a/b"}', 422, "VALIDATION_FAILED", "$.id"),
        (b'{"name": "P", "colour": "red"}', 422, "VALIDATION_FAILED", "colour"),
    ],
)
def test_bad_phases_are_rejected(
    api: httpx.Client, content: bytes, status: int, code: str, fragment: str
) -> None:
    assert fragment in error(api.post("/phases", content=content), status, code)["message"]
    assert api.get("/phases").json() == {"phases": []}


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"name": "x"}),
        ("POST", "/verify", None),
        ("GET", "/memory", None),
        ("POST", "/memory", {"notes": [{"text": "x"}]}),
        ("POST", "/prompt", {"text": "x", "sessionID": "s"}),
    ],
)
def test_an_unknown_phase_is_404_and_a_bad_id_400(
    api: httpx.Client, method: str, suffix: str, body: dict[str, Any] | None
) -> None:
    missing = api.request(method, f"/phases/phs_missing{suffix}", json=body)
    assert error(missing, 404, "PHASE_NOT_FOUND")["details"] == {"phaseID": "phs_missing"}
    bad = api.request(method, f"/phases/bad.id{suffix}", json=body)
    assert error(bad, 400, "INVALID_ID")["details"] == {"parameter": "phaseID"}
    assert logged(api) == []


# Changing a phase


def test_patching_a_phase_changes_only_what_is_given(api: httpx.Client) -> None:
    phase = add_phase(api, id="p", name="Draft", description="d", phase_rounds=2)
    changed = patch_phase(
        api, "p", name="Build", seq=7, session_id="lead-1", phase_rounds=4, container_id="ctr_1"
    )
    assert changed == {
        **phase,
        "name": "Build",
        "seq": 7,
        "container_id": "ctr_1",
        "session_id": "lead-1",
        "phase_rounds": 4,
        "version": 2,
        "updated_at": changed["updated_at"],
    }
    assert get_phase(api, "p") == changed
    assert logged(api)[-1] == {
        "seq": 2,
        "type": "phase.updated",
        "payload": {"phases": [changed], "phaseID": "p"},
    }
    # Nothing to change: no event, same phase.
    assert patch_phase(api, "p") == changed
    assert patch_phase(api, "p", status="pending") == changed
    assert types(api) == ["phase.created", "phase.updated"]

    # Fields and status together: both events, in that order.
    both = patch_phase(api, "p", description="now", status="active")
    assert (both["description"], both["status"], both["version"]) == ("now", "active", 4)
    assert types(api)[-2:] == ["phase.updated", "phase.status_changed"]
    assert logged(api)[-1]["payload"]["phases"] == [both]


def test_a_stale_phase_version_is_409(api: httpx.Client) -> None:
    add_phase(api, id="p")
    patch_phase(api, "p", name="v2")
    stale = api.patch("/phases/p", json={"name": "v3", "version": 1})
    assert error(stale, 409, "STALE_VERSION")["details"] == {"expected": 1, "current": 2}
    assert get_phase(api, "p")["name"] == "v2"
    assert patch_phase(api, "p", name="v3", version=2)["version"] == 3


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"name": ""}, "$.name"),
        ({"status": "done"}, "$.status"),
        ({"phase_rounds": 0}, "$.phase_rounds"),
        ({"session_id": "a b"}, "$.session_id"),
        ({"memory_count": 3}, "memory_count"),
        ({"version": "1"}, "$.version"),
    ],
)
def test_bad_phase_patches_are_422(api: httpx.Client, body: dict[str, Any], fragment: str) -> None:
    phase = add_phase(api, id="p")
    response = api.patch("/phases/p", json=body)
    assert fragment in error(response, 422, "VALIDATION_FAILED")["message"]
    assert get_phase(api, "p") == phase


@pytest.mark.parametrize("start", PHASE_STATUSES)
def test_phase_status_moves_exactly_as_the_table_says(api: httpx.Client, start: str) -> None:
    for target in PHASE_STATUSES:
        # Each phase is the last in order when it moves, so completing it starts no other.
        phase_id = add_phase(api, name=f"{start} to {target}")["id"]
        for status in PATH_TO[start]:
            assert patch_phase(api, phase_id, status=status)["status"] == status
        before = get_phase(api, phase_id)
        response = api.patch(f"/phases/{phase_id}", json={"status": target})
        if target == start:
            assert response.json() == {"phase": before}
        elif target in PHASE_TRANSITIONS[start]:
            assert response.status_code == 200, response.text
            after = response.json()["phase"]
            assert (after["status"], after["version"]) == (target, before["version"] + 1)
            event = logged(api)[-1]
            assert event["type"] == "phase.status_changed"
            assert event["payload"] == {
                "phases": [after],
                "phaseID": phase_id,
                "from": start,
                "to": target,
                "reason": "changed by operator",
            }
        else:
            body = error(response, 409, "ILLEGAL_TRANSITION")
            assert body["details"] == {
                "from": start,
                "to": target,
                "allowed": sorted(PHASE_TRANSITIONS[start]),
            }
            assert get_phase(api, phase_id) == before


def test_completing_a_phase_activates_the_next_pending_one(api: httpx.Client) -> None:
    add_phase(api, id="early", name="Early", seq=0)
    add_phase(api, id="a", name="A", seq=1, status="active")
    add_phase(api, id="b", name="B", seq=2)
    add_phase(api, id="c", name="C", seq=3)
    patch_phase(api, "a", status="completed")
    assert statuses(api) == {"early": "pending", "a": "completed", "b": "active", "c": "pending"}
    done, started = logged(api)[-2:]
    assert (done["payload"]["phaseID"], done["payload"]["to"]) == ("a", "completed")
    assert started["type"] == "phase.status_changed"
    assert {k: started["payload"][k] for k in ("phaseID", "from", "to", "reason")} == {
        "phaseID": "b",
        "from": "pending",
        "to": "active",
        "reason": "phase 'A' completed",
    }
    assert started["payload"]["phases"] == [get_phase(api, "b")]
    assert get_phase(api, "b")["version"] == 2

    patch_phase(api, "b", status="completed")
    patch_phase(api, "c", status="completed")  # the last one: nothing after it
    assert statuses(api) == {
        "early": "pending",
        "a": "completed",
        "b": "completed",
        "c": "completed",
    }


def test_completing_a_phase_starts_none_while_another_is_active(api: httpx.Client) -> None:
    add_phase(api, id="a", seq=0, status="active")
    add_phase(api, id="b", seq=1, status="active")
    add_phase(api, id="c", seq=2)
    patch_phase(api, "a", status="completed")
    assert statuses(api) == {"a": "completed", "b": "active", "c": "pending"}
    patch_phase(api, "b", status="completed")
    assert statuses(api) == {"a": "completed", "b": "completed", "c": "active"}


# Verify


def test_verify_records_pass_or_fail_per_entry(api: httpx.Client) -> None:
    add_phase(api, id="p", name="Build", status="active")
    add_phase(api, id="other", name="Other")
    add_entries(
        api,
        {
            "id": "ok",
            "content": "c",
            "phase_id": "p",
            "spec": {"acceptance_criteria": ["tests", "docs"]},
        },
        {
            "id": "broke",
            "content": "c",
            "phase_id": "p",
            "spec": {"acceptance_criteria": ["tests"]},
        },
        {
            "id": "partial",
            "content": "c",
            "phase_id": "p",
            "spec": {"acceptance_criteria": ["a", "b"]},
        },
        {"id": "by-hand", "content": "c", "phase_id": "p"},
        {"id": "waiting", "content": "c", "phase_id": "p"},
        {"id": "dropped", "content": "c", "phase_id": "p"},
        {"id": "elsewhere", "content": "c", "phase_id": "other"},
        {"id": "loose", "content": "c"},
    )
    work(api, "ok", "w1", passed("docs", "tests"))
    work(api, "broke", "w2", [{"criterion": "tests", "passed": False, "evidence": "3 failed"}])
    work(api, "partial", "w3", passed("a"))
    set_status(api, "by-hand", "dispatched", "in_progress", "completed")
    set_status(api, "dropped", "cancelled")

    response = api.post("/phases/p/verify")
    assert response.status_code == 200, response.text
    result = response.json()
    expected = [
        {"entryID": "ok", "result": "PASS", "reasons": []},
        {"entryID": "broke", "result": "FAIL", "reasons": ["criterion failed: tests"]},
        {"entryID": "partial", "result": "FAIL", "reasons": ["criterion not reported: b"]},
        {"entryID": "by-hand", "result": "PASS", "reasons": []},
        {"entryID": "waiting", "result": "FAIL", "reasons": ["status is pending, not completed"]},
    ]
    assert result["passed"] is False
    assert result["results"] == expected
    phase = result["phase"]
    assert phase == get_phase(api, "p")
    assert (phase["status"], phase["rounds_completed"], phase["version"]) == ("active", 1, 2)
    assert phase["verification"] == {
        "passed": False,
        "at": phase["updated_at"],
        "results": expected,
    }

    verdicts = {e["id"]: e["verification"] for e in api.get("/todo").json()["entries"]}
    assert verdicts == {
        "ok": "PASS",
        "broke": "FAIL",
        "partial": "FAIL",
        "by-hand": "PASS",
        "waiting": "FAIL",
        "dropped": None,
        "elsewhere": None,
        "loose": None,
    }
    event = logged(api)[-1]
    assert event["type"] == "phase.verified"
    assert (event["payload"]["passed"], event["payload"]["results"]) == (False, expected)
    assert [e["id"] for e in event["payload"]["entries"]] == [
        "ok",
        "broke",
        "partial",
        "by-hand",
        "waiting",
    ]

    # Verifying again records a round; entries whose verdict did not change are not touched.
    again = api.post("/phases/p/verify").json()
    assert again["phase"]["rounds_completed"] == 2
    assert logged(api)[-1]["payload"].get("entries", []) == []


def test_a_passing_verify_completes_the_phase_and_starts_the_next(api: httpx.Client) -> None:
    add_phase(api, id="p", name="Build", status="active")
    add_phase(api, id="next", name="Ship")
    add_entries(
        api,
        {"id": "e1", "content": "c", "phase_id": "p", "spec": {"acceptance_criteria": ["green"]}},
        {"id": "e2", "content": "c", "phase_id": "p"},
    )
    work(api, "e1", "w1", passed("green"))
    set_status(api, "e2", "cancelled")

    result = api.post("/phases/p/verify").json()
    assert result["passed"] is True
    assert result["results"] == [{"entryID": "e1", "result": "PASS", "reasons": []}]
    assert result["phase"]["status"] == "completed"
    assert result["phase"] == get_phase(api, "p")
    assert statuses(api) == {"p": "completed", "next": "active"}
    verified, done, started = logged(api)[-3:]
    assert verified["type"] == "phase.verified"
    assert {k: done["payload"][k] for k in ("phaseID", "from", "to", "reason")} == {
        "phaseID": "p",
        "from": "active",
        "to": "completed",
        "reason": "verified",
    }
    assert (started["payload"]["phaseID"], started["payload"]["to"]) == ("next", "active")

    error(api.post("/phases/p/verify"), 409, "PHASE_NOT_ACTIVE")


def test_a_phase_that_uses_up_its_rounds_fails(api: httpx.Client) -> None:
    add_phase(api, id="p", name="Build", status="active", phase_rounds=2)
    add_phase(api, id="next", name="Ship")
    add_entries(api, {"id": "e", "content": "c", "phase_id": "p"})

    first = api.post("/phases/p/verify").json()
    assert (first["passed"], first["phase"]["status"], first["phase"]["rounds_completed"]) == (
        False,
        "active",
        1,
    )
    second = api.post("/phases/p/verify").json()
    assert (second["passed"], second["phase"]["status"]) == (False, "failed")
    assert second["phase"]["rounds_completed"] == 2
    assert statuses(api) == {"p": "failed", "next": "pending"}
    failed = logged(api)[-1]
    assert {k: failed["payload"][k] for k in ("from", "to", "reason")} == {
        "from": "active",
        "to": "failed",
        "reason": "failed verify 2 times",
    }

    refused = api.post("/phases/p/verify")
    assert error(refused, 409, "PHASE_NOT_ACTIVE")["details"] == {
        "phaseID": "p",
        "status": "failed",
    }
    # Reactivated with more rounds, it may be verified again.
    patch_phase(api, "p", status="active", phase_rounds=4)
    third = api.post("/phases/p/verify").json()
    assert (third["phase"]["status"], third["phase"]["rounds_completed"]) == ("active", 3)


@pytest.mark.parametrize("status", ["pending", "completed"])
def test_only_an_active_phase_is_verified(api: httpx.Client, status: str) -> None:
    phase = add_phase(api, id="p", status=status)
    response = api.post("/phases/p/verify")
    assert error(response, 409, "PHASE_NOT_ACTIVE")["details"] == {
        "phaseID": "p",
        "status": status,
    }
    assert get_phase(api, "p") == phase
    assert types(api) == ["phase.created"]


# Memory


def test_memory_notes_are_added_and_read_back(api: httpx.Client) -> None:
    add_phase(api, id="p")
    assert api.get("/phases/p/memory").json() == {"notes": [], "count": 0, "limit": 200}
    added = api.post(
        "/phases/p/memory",
        json={"notes": [{"text": "The API is frozen"}, {"text": "Use msgspec", "sessionID": "s1"}]},
    )
    assert added.status_code == 201
    notes = added.json()["notes"]
    assert added.json()["count"] == 2
    assert [(n["text"], n["sessionID"]) for n in notes] == [
        ("The API is frozen", None),
        ("Use msgspec", "s1"),
    ]
    assert all(n["created_at"] > 0 for n in notes)
    more = api.post("/phases/p/memory", json={"notes": [{"text": "Third"}]}).json()
    assert more["count"] == 3
    assert api.get("/phases/p/memory").json() == {
        "notes": [*notes, *more["notes"]],
        "count": 3,
        "limit": 200,
    }
    assert get_phase(api, "p")["memory_count"] == 3
    memory_events = [e for e in logged(api) if e["type"] == "phase.memory_added"]
    assert [e["payload"]["notes"] for e in memory_events] == [notes, more["notes"]]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"notes": []}, "length >= 1"),
        ({"notes": [{"text": ""}]}, "$.notes[0].text"),
        ({"notes": [{"text": "x", "sessionID": "a b"}]}, "$.notes[0].sessionID"),
        ({"notes": [{"text": "x"}] * 101}, "length <= 100"),
        ({"notes": [{"text": "x", "tag": "y"}]}, "tag"),
        ({"text": "x"}, "text"),
    ],
)
def test_bad_memory_notes_are_422(api: httpx.Client, body: dict[str, Any], fragment: str) -> None:
    add_phase(api, id="p")
    response = api.post("/phases/p/memory", json=body)
    assert fragment in error(response, 422, "VALIDATION_FAILED")["message"]
    assert api.get("/phases/p/memory").json()["notes"] == []


@pytest.fixture
def small_memory(
    make_server: Callable[..., ServerProcess], workspace: str
) -> Iterator[httpx.Client]:
    server = make_server(ORCH_MAX_MEMORY_NOTES="3")
    with httpx.Client(base_url=server.workspace_url(workspace), timeout=10) as client:
        yield client


def test_memory_is_bounded(small_memory: httpx.Client) -> None:
    api = small_memory
    add_phase(api, id="p")
    add_phase(api, id="q")
    assert (
        api.post("/phases/p/memory", json={"notes": [{"text": "1"}, {"text": "2"}]}).json()["count"]
        == 2
    )
    full = api.post("/phases/p/memory", json={"notes": [{"text": "3"}, {"text": "4"}]})
    body = error(full, 413, "MEMORY_FULL")
    assert body["details"] == {"limit": 3, "count": 2}
    assert "at most 3" in body["message"]
    assert api.post("/phases/p/memory", json={"notes": [{"text": "3"}]}).json()["count"] == 3
    error(api.post("/phases/p/memory", json={"notes": [{"text": "4"}]}), 413, "MEMORY_FULL")

    assert api.get("/phases/p/memory").json()["limit"] == 3
    assert [n["text"] for n in api.get("/phases/p/memory").json()["notes"]] == ["1", "2", "3"]
    assert get_phase(api, "p")["memory_count"] == 3
    # The bound is per phase.
    assert api.post("/phases/q/memory", json={"notes": [{"text": "q"}] * 3}).json()["count"] == 3
    assert types(api).count("phase.memory_added") == 3


# Prompts and sessions


def test_a_phase_prompt_goes_to_the_phases_session(api: httpx.Client) -> None:
    add_phase(api, id="p", session_id="lead-1")
    add_entries(api, {"id": "e", "content": "c", "phase_id": "p"})
    response = api.post("/phases/p/prompt", json={"text": "Start the build", "entryID": "e"})
    assert response.status_code == 201, response.text
    prompt = response.json()["prompt"]
    assert prompt["id"].startswith("prm_")
    assert prompt["created_at"] > 0
    assert {k: v for k, v in prompt.items() if k not in ("id", "created_at")} == {
        "sessionID": "lead-1",
        "text": "Start the build",
        "phaseID": "p",
        "entryID": "e",
    }
    assert logged(api)[-1] == {"seq": 3, "type": "prompt.dispatched", "payload": prompt}

    # A sessionID in the body wins over the phase's; the path names the phase.
    other = api.post("/phases/p/prompt", json={"text": "t", "sessionID": "s2", "phaseID": "x"})
    assert other.status_code == 201, other.text
    assert (other.json()["prompt"]["sessionID"], other.json()["prompt"]["phaseID"]) == ("s2", "p")


def test_a_phase_without_a_session_cannot_be_prompted(api: httpx.Client) -> None:
    add_phase(api, id="p")
    refused = api.post("/phases/p/prompt", json={"text": "hello"})
    assert error(refused, 409, "NO_SESSION")["details"] == {"phaseID": "p"}
    patch_phase(api, "p", session_id="lead-2")
    assert api.post("/phases/p/prompt", json={"text": "hello"}).json()["prompt"]["sessionID"] == (
        "lead-2"
    )


def test_a_prompt_goes_to_any_session(api: httpx.Client) -> None:
    add_phase(api, id="p", session_id="lead")
    response = api.post("/sessions/agent.7:x_y-z/prompt", json={"text": "Rebase", "phaseID": "p"})
    assert response.status_code == 201, response.text
    prompt = response.json()["prompt"]
    assert (prompt["sessionID"], prompt["phaseID"], prompt["text"]) == (
        "agent.7:x_y-z",
        "p",
        "Rebase",
    )
    # The path names the session, whatever the body says.
    body_session = api.post("/sessions/s1/prompt", json={"text": "t", "sessionID": "s2"})
    assert body_session.json()["prompt"]["sessionID"] == "s1"
    assert types(api) == ["phase.created", "prompt.dispatched", "prompt.dispatched"]


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/sessions/a%20b/prompt", {"text": "t"}, 400, "INVALID_ID"),
        (f"/sessions/{'s' * 129}/prompt", {"text": "t"}, 400, "INVALID_ID"),
        ("/sessions/s/prompt", {"text": ""}, 422, "VALIDATION_FAILED"),
        ("/sessions/s/prompt", {}, 422, "VALIDATION_FAILED"),
        ("/sessions/s/prompt", {"text": "t", "urgent": True}, 422, "VALIDATION_FAILED"),
        ("/sessions/s/prompt", {"text": "t", "phaseID": "phs_none"}, 404, "PHASE_NOT_FOUND"),
        ("/sessions/s/prompt", {"text": "t", "entryID": "entry_none"}, 404, "ENTRY_NOT_FOUND"),
        ("/phases/p/prompt", {"text": "t", "entryID": "entry_none"}, 404, "ENTRY_NOT_FOUND"),
        ("/phases/p/prompt", {"text": "t", "sessionID": "a b"}, 422, "VALIDATION_FAILED"),
        ("/phases/p/prompt", {"text": "x" * 65_537}, 422, "VALIDATION_FAILED"),
    ],
)
def test_bad_prompts_are_rejected(
    api: httpx.Client, path: str, body: dict[str, Any], status: int, code: str
) -> None:
    add_phase(api, id="p", session_id="lead")
    error(api.post(path, json=body), status, code)
    assert types(api) == ["phase.created"]
    error(api.post("/sessions/s/prompt", content=b""), 400, "INVALID_JSON")


def test_sessions_lists_every_session_seen(api: httpx.Client) -> None:
    assert api.get("/sessions").json() == {"sessions": []}
    add_phase(api, id="p", session_id="lead", status="active")
    add_entries(api, {"id": "e", "content": "c", "phase_id": "p"})
    api.post("/phases/p/prompt", json={"text": "go"})
    set_status(api, "e", "dispatched")
    lease = api.post("/executor/claim", json={"sessionID": "worker"}).json()["lease"]
    calls = [
        {"tool": "fs.read", "sessionID": "coder", "agentName": "a", "status": "ok", "timestamp": t}
        for t in (1000, 3000)
    ]
    assert api.post("/log", json={"items": calls}).status_code == 201

    sessions = api.get("/sessions").json()["sessions"]
    assert [s["id"] for s in sessions] == ["coder", "lead", "worker"]
    coder, lead, worker = sessions
    assert coder == {
        "id": "coder",
        "tool_calls": 2,
        "first_call_at": 1000,
        "last_call_at": 3000,
        "lease": None,
        "entryID": None,
        "phaseID": None,
    }
    assert lead == {**coder, "id": "lead", "tool_calls": 0, "first_call_at": None,
                    "last_call_at": None, "phaseID": "p"}  # fmt: skip
    assert (worker["entryID"], worker["phaseID"]) == ("e", None)
    assert worker["lease"]["id"] == lease["id"]
    assert worker["lease"]["expires_at"] == lease["expires_at"]
    assert worker["lease"]["sessionID"] == "worker"

    # A finished lease leaves the session listed, without a lease.
    assert api.post(f"/executor/leases/{lease['id']}/complete").status_code == 200
    worker = api.get("/sessions").json()["sessions"][2]
    assert (worker["id"], worker["lease"], worker["entryID"]) == ("worker", None, None)


# Events, purge


def test_every_phase_change_is_an_event_on_the_events_stream(api: httpx.Client) -> None:
    add_phase(api, id="p", name="Build", session_id="lead")
    add_phase(api, id="q", name="Ship")
    patch_phase(api, "p", description="d", status="active")
    api.post("/phases/p/memory", json={"notes": [{"text": "n"}]})
    api.post("/phases/p/prompt", json={"text": "go"})
    api.post("/phases/p/verify")  # no entries: passes, completes p and starts q

    dumped = logged(api)
    assert [e["type"] for e in dumped] == [
        "phase.created",
        "phase.created",
        "phase.updated",
        "phase.status_changed",
        "phase.memory_added",
        "prompt.dispatched",
        "phase.verified",
        "phase.status_changed",
        "phase.status_changed",
    ]
    assert statuses(api) == {"p": "completed", "q": "active"}
    with open_stream(api, "/events", since_seq=0) as stream:
        frames = event_frames(stream.until_seq(len(dumped)))
    assert [f.json() for f in frames] == dumped
    assert [(f.seq, f.event) for f in frames] == [(e["seq"], e["type"]) for e in dumped]


def test_purge_clears_phases_memory_and_sessions(api: httpx.Client) -> None:
    add_phase(api, id="p", session_id="lead")
    api.post("/phases/p/memory", json={"notes": [{"text": "remember"}]})
    api.post("/phases/p/prompt", json={"text": "go"})
    assert [s["id"] for s in api.get("/sessions").json()["sessions"]] == ["lead"]

    assert api.post("/purge").status_code == 200
    assert api.get("/phases").json() == {"phases": []}
    assert api.get("/todo").json()["phases"] == []
    error(api.get("/phases/p"), 404, "PHASE_NOT_FOUND")
    error(api.get("/phases/p/memory"), 404, "PHASE_NOT_FOUND")
    assert api.get("/sessions").json() == {"sessions": []}

    # The phase id is free again, and its memory starts empty.
    add_phase(api, id="p")
    assert api.get("/phases/p/memory").json() == {"notes": [], "count": 0, "limit": 200}
