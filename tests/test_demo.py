"""``orchestrator demo`` against a real server: it finishes by itself, and leaves the plan it
narrates (entries done, a budget tripped, a question answered, phases completed)."""

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx

from orchestrator.demo import BUILD, DESIGN, REFACTOR, TESTS
from tests.servers import ROOT, ServerProcess


def run_demo(server: ServerProcess, workspace: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "orchestrator", "demo", "--url", server.base_url]
    return subprocess.run(
        [*command, "--workspace", workspace, "--speed", "10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )


def events(api: httpx.Client) -> list[dict[str, Any]]:
    dump = api.get("/debug-dump")
    assert dump.status_code == 200
    found: list[dict[str, Any]] = dump.json()["events"]
    return found


def test_the_demo_plays_a_plan_through(
    make_server: Callable[..., ServerProcess], workspace: str
) -> None:
    server = make_server(ORCH_DISPATCH_TICK_S="0.1")
    done = run_demo(server, workspace)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "watch it live:  curl -N" in done.stdout
    assert "the demo answers" in done.stdout

    with httpx.Client(base_url=server.workspace_url(workspace), timeout=10) as api:
        todo = api.get("/todo").json()
        statuses = {e["id"]: e["status"] for e in todo["entries"]}
        assert statuses.pop(REFACTOR) == "cancelled"  # over its locked budget
        assert set(statuses.values()) == {"completed"}
        assert len(statuses) == 4
        assert [(p["id"], p["status"]) for p in todo["phases"]] == [
            (DESIGN, "completed"),
            (BUILD, "completed"),
        ]
        assert api.get("/questions").json() == {"questions": []}
        # In the published shapes: priority words, the spec object, phases' seq.
        priorities = {e["id"]: e["priority"] for e in todo["entries"]}
        assert (priorities[REFACTOR], set(priorities.values())) == (
            "low",
            {"low", "medium", "high"},
        )
        for entry in todo["entries"]:
            spec = entry["spec"]
            assert (spec["authored_by"], spec["revision"]) == ("orchestrator-demo", 1)
            assert spec["acceptance_criteria"]
            assert spec["requirements"] == entry["content"]
        assert [(p["seq"], p["container_id"]) for p in todo["phases"]] == [
            (0, None),
            (1, "ctr_demo_build"),
        ]

        seen = events(api)
        [exceeded] = [e for e in seen if e["type"] == "budget.exceeded"]
        assert exceeded["payload"]["entryID"] == REFACTOR
        assert exceeded["payload"]["cap"] == "budget_usd"
        [asked] = [e for e in seen if e["type"] == "question.asked"]
        [answered] = [e for e in seen if e["type"] == "question.answered"]
        assert answered["payload"]["id"] == asked["payload"]["id"]
        assert answered["payload"]["answers"] == [["pytest"]]
        moves = [e["payload"] for e in seen if e["type"] == "todo.status_changed"]
        waited = [m["to"] for m in moves if m["entryID"] == TESTS]
        assert "awaiting_input" in waited
        assert [e["payload"]["passed"] for e in seen if e["type"] == "phase.verified"] == [
            True,
            False,  # the blocked entry fails Build's first verify; cancelled, it passes
            True,
        ]
        assert api.get("/log", params={"limit": 1}).json()["meta"]["total"] > 0
        assert api.get("/executor/status").json()["executor"]["status"] == "paused"

    # Rerun on the same workspace: purged first, it plays the same plan again.
    again = run_demo(server, workspace)
    assert again.returncode == 0, again.stdout + again.stderr


def test_the_demo_says_when_no_server_answers() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "demo", "--url", "http://127.0.0.1:9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 3
    assert "is the server running" in done.stderr
