"""A workspace holding data of every kind, written through the API, for tests that need
real ids and real state: config, the TODO and its entries, phases with memory, an executor
that was started, workers holding leases (one with a file lock), usage, tool calls, a
question and a prompt.

Every value written carries ``tag``, so a test can tell this workspace's data apart from
anything else in a response.
"""

import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Seeded:
    workspace: str
    tag: str
    entries: list[str]  # [leased with a file lock, leased, pending behind the first]
    phase: str
    question: str
    leases: list[str]  # [the one holding the file lock, the other]
    sessions: list[str]  # [the worker with the lock, the other worker, the asker]
    call: str  # a recorded tool call's callID
    file: str  # the locked file
    job: str  # a completed import job
    snapshot: str  # a vault snapshot of all of the above

    def values(self) -> set[str]:
        """What gives this workspace's data away in a response body: the tag (which every
        value written and every session id carries) and the ids the service minted."""
        minted = [*self.entries, self.phase, self.question, *self.leases, self.call]
        return {self.tag, *minted, self.job, self.snapshot}


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.request.url, response.text)
    return response.json() if response.content else None


def seed(api: httpx.Client, workspace: str, tag: str) -> Seeded:
    """Fill ``workspace`` (``api`` is a client whose base URL is its orchestration root)."""
    workers = [f"{tag}-worker-1", f"{tag}-worker-2"]
    asker, file = f"{tag}-asker", f"src/{tag}.py"
    job = _import(api)
    _ok(api.patch("/config", json={"owner": f"{tag}-config", "nested": {"depth": 1}}))
    _ok(api.patch("/todo", json={"project_context": f"{tag}-context"}))
    phase = _ok(api.post("/phases", json={"name": f"{tag}-phase", "status": "active"}), 201)[
        "phase"
    ]["id"]
    _ok(api.post(f"/phases/{phase}/memory", json={"notes": [{"text": f"{tag}-memory"}]}), 201)
    spec = {"requirements": f"{tag}-spec", "acceptance_criteria": ["it works"]}
    made = _ok(
        api.post(
            "/todo/entries",
            json={
                "entries": [
                    {"content": f"{tag}-content", "files": [file], "phase_id": phase, "spec": spec},
                    {"content": f"{tag}-content", "priority": "high", "budget_usd": 10},
                ]
            },
        ),
        201,
    )
    locked, other = (e["id"] for e in made["entries"])
    behind = _ok(
        api.post("/todo/entries", json={"entries": [{"content": "later", "depends_on": [locked]}]}),
        201,
    )["entries"][0]["id"]
    # Dispatch now, deterministically, then start: the running dispatcher finds nothing
    # more to do (the third entry waits for the first).
    assert set(_ok(api.post("/executor/force-dispatch"))["dispatched"]) == {locked, other}
    first = _ok(api.post("/executor/claim", json={"sessionID": workers[1]}))["lease"]
    second = _ok(api.post("/executor/claim", json={"sessionID": workers[0]}))["lease"]
    assert (first["entryID"], second["entryID"]) == (other, locked)
    _ok(api.post("/executor/start"))
    _ok(api.patch("/budget", json={"cap_usd": 1000, "max_workers": 8}))
    usage = {"sessionID": workers[1], "entryID": other, "cost_usd": 0.5, "tokens": 1200}
    _ok(api.post("/usage", json=usage), 201)
    call = {
        "tool": "fs.read",
        "sessionID": workers[0],
        "agentName": f"{tag}-agent",
        "status": "ok",
        "entryID": locked,
        "title": f"{tag}-title",
        "target": file,
    }
    call_id = _ok(api.post("/log", json=call), 201)["items"][0]["callID"]
    question = {
        "sessionID": asker,
        "questions": [
            {
                "question": f"{tag}-asked",
                "header": "choose",
                "options": [{"label": "yes"}, {"label": "no"}],
            }
        ],
        "tool": {"messageID": f"{tag}-message", "callID": f"{tag}-call"},
    }
    question_id = _ok(api.post("/questions", json=question), 201)["question"]["id"]
    _ok(api.post(f"/sessions/{workers[0]}/prompt", json={"text": f"{tag}-prompt"}), 201)
    snapshot = _ok(api.post("/vault/sync"), 201)["snapshot"]["id"]
    return Seeded(
        workspace=workspace,
        tag=tag,
        entries=[locked, other, behind],
        phase=phase,
        question=question_id,
        leases=[second["id"], first["id"]],
        sessions=[workers[0], workers[1], asker],
        call=call_id,
        file=file,
        job=job,
        snapshot=snapshot,
    )


def _import(api: httpx.Client) -> str:
    """An import job of the (empty) workspace's own document, run to completion first, so
    that it changes nothing written after it."""
    document = _ok(api.get("/vault/export"))
    job: str = _ok(api.post("/import", json={"document": document}), 202)["importJobID"]
    deadline = time.monotonic() + 10
    while _ok(api.get(f"/import/{job}"))["status"] == "running":
        assert time.monotonic() < deadline, "the import job did not finish"
        time.sleep(0.02)
    assert _ok(api.get(f"/import/{job}"))["status"] == "completed"
    return job
