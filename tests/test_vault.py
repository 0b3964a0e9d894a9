"""The vault (API.md part 5): the TODO as a portable document, in JSON and in Markdown, its
published JSON Schema, and versioned, content-addressed snapshots on either backend."""

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from orchestrator.documents import (
    FORMAT,
    DocumentBudget,
    DocumentEntry,
    DocumentInvalid,
    DocumentNote,
    DocumentPhase,
    PlanDocument,
    canonical,
    digest,
    export,
    pretty,
    schema_json,
    validate,
)
from orchestrator.events import MemoryAdded
from orchestrator.imports import decide_import
from orchestrator.markdown import parse, read, render
from orchestrator.model import BudgetCaps, Check, MemoryNote, Plan, Spec
from orchestrator.plan import evolve
from orchestrator.transfer import ImportJob, ImportSource, Snapshot
from orchestrator.vault import DirectorySnapshots, RedisSnapshots, SnapshotStore
from tests.servers import ROOT, ServerProcess

SCHEMA_FILE = ROOT / "docs" / "todo-document.schema.json"

# Generated TODOs: documents as an export writes them (phases by seq, files sorted, note
# times kept), with any text at all in them.

ids = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
texts = st.text(max_size=40)
names = st.text(min_size=1, max_size=30)
money = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
sessions = st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


notes = st.builds(
    DocumentNote,
    text=st.text(min_size=1, max_size=40),
    sessionID=optional(sessions),
    created_at=st.integers(0, 2**45),
)
paths = st.lists(st.text(min_size=1, max_size=20), max_size=2)
specs = st.builds(
    Spec,
    requirements=texts,
    acceptance_criteria=st.lists(texts, max_size=3),
    files_to_create=paths,
    files_to_modify=paths,
    patterns=texts,
    api_contract=texts,
    examples=texts,
    integration_points=texts,
    authored_by=optional(names),
    last_edited=optional(st.integers(0, 2**45)),
    revision=st.integers(0, 100),
).filter(
    lambda spec: spec != Spec()  # an empty spec travels as none
)
checks = st.builds(Check, criterion=texts, passed=st.booleans(), evidence=texts)
caps = st.builds(
    BudgetCaps,
    cap_usd=optional(money),
    max_tokens=optional(st.integers(0, 10**9)),
    max_tool_calls=optional(st.integers(0, 10**6)),
    max_wall_ms=optional(st.integers(0, 10**9)),
    max_workers=optional(st.integers(1, 100)),
)


@st.composite
def phases(draw: st.DrawFn) -> list[DocumentPhase]:
    made = [
        DocumentPhase(
            id=phase_id,
            name=draw(names),
            description=draw(texts),
            seq=draw(st.integers(0, 5)),
            container_id=draw(optional(names)),
            status=draw(st.sampled_from(["pending", "active", "completed", "failed"])),
            phase_rounds=draw(optional(st.integers(1, 10))),
            memory=draw(st.lists(notes, max_size=3)),
        )
        for phase_id in draw(st.lists(ids, unique=True, max_size=4))
    ]
    return sorted(made, key=lambda p: p.seq or 0)


@st.composite
def entry(draw: st.DrawFn, entry_id: str, earlier: list[str], phase_ids: list[str]) -> Any:
    def some(choices: list[str], most: int) -> list[str]:
        if not choices:
            return []
        return draw(st.lists(st.sampled_from(choices), unique=True, max_size=most))

    return DocumentEntry(
        id=entry_id,
        type=draw(names),
        content=draw(st.text(min_size=1, max_size=60)),
        spec=draw(optional(specs)),
        spec_frozen=draw(st.booleans()),
        status=draw(st.sampled_from(["pending", "completed", "failed", "blocked", "cancelled"])),
        priority=draw(st.sampled_from(["low", "medium", "high", "critical"])),
        depends_on=some(earlier, 3),  # on earlier entries only: no cycle
        children=some(earlier, 2),
        parallelizable=draw(st.booleans()),
        parallel_group=draw(optional(names)),
        files=sorted(draw(st.sets(st.text(min_size=1, max_size=20), max_size=3))),
        budget_usd=draw(optional(money)),
        budget_rounds=draw(optional(st.integers(0, 100))),
        budget_locked=draw(st.booleans()),
        created_by=draw(optional(names)),
        phase_id=draw(optional(st.sampled_from(phase_ids))) if phase_ids else None,
        summary=draw(optional(texts)),
        report=draw(st.lists(checks, max_size=2)),
    )


@st.composite
def documents(draw: st.DrawFn) -> PlanDocument:
    made_phases = draw(phases())
    entry_ids = draw(st.lists(ids, unique=True, max_size=8))
    phase_ids = [p.id for p in made_phases]
    entries = [
        draw(entry(entry_id, entry_ids[:i], phase_ids)) for i, entry_id in enumerate(entry_ids)
    ]
    return PlanDocument(
        format=FORMAT,
        schema_version=2,
        project_context=draw(texts),
        budget=draw(optional(st.builds(DocumentBudget, caps=caps).filter(has_caps))),
        phases=made_phases,
        entries=entries,
    )


def has_caps(budget: DocumentBudget) -> bool:
    return budget.caps != BudgetCaps()


JOB = ImportJob(
    id="imp_1", todoID="todo_1", source=ImportSource(kind="document"), created_at=0, updated_at=0
)


def imported(document: PlanDocument, plan: Plan | None = None) -> tuple[Plan, dict[str, Any]]:
    """The plan importing the document leaves (folding its events as the projection does),
    and each phase's memory notes."""
    state = plan or Plan()
    memory: dict[str, list[MemoryNote]] = {}
    for seq, event in enumerate(decide_import(state, document, JOB, 1_000).events, 1):
        state = evolve(state, event, state.version + seq)
        if isinstance(event, MemoryAdded):
            memory.setdefault(event.phaseID, []).extend(event.notes)
    return state, memory


# The round trip, over generated TODOs


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=documents())
def test_export_of_an_import_into_an_empty_workspace_is_the_same_document(
    document: PlanDocument,
) -> None:
    plan, memory = imported(document)
    again = export(plan, memory)
    assert again == document
    assert canonical(again) == canonical(document)
    # And a second trip changes nothing either.
    assert export(*imported(again)) == document


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=documents())
def test_the_markdown_checklist_reads_back_as_the_same_document(document: PlanDocument) -> None:
    assert read(render(document)) == document


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=documents())
def test_every_exported_document_validates_against_its_types_and_schema(
    document: PlanDocument,
) -> None:
    as_json = msgspec.json.decode(pretty(document))
    assert validate(as_json) == document
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    assert jsonschema_rs.validator_for(msgspec.json.decode(schema_json())).is_valid(as_json)


def test_export_leaves_the_run_behind_and_travels_work_in_progress_as_pending() -> None:
    document = PlanDocument(
        format=FORMAT,
        schema_version=2,
        entries=[DocumentEntry(id="a", content="A"), DocumentEntry(id="b", content="B")],
    )
    plan, _ = imported(document)
    busy = msgspec.structs.replace(
        plan.entries["a"], status="in_progress", spent_usd=3.5, attempts=2, assigned_to="s1"
    )
    plan.entries["a"] = busy
    assert export(plan, {}) == document


# Validation: every problem, with its path


def test_an_invalid_document_names_every_problem_with_its_json_path() -> None:
    raw = {
        "format": "orchestrator-todo",
        "schema_version": 3,
        "surprise": True,
        "phases": [{"id": "p1", "name": ""}, {"id": "p1", "name": "again"}],
        "entries": [
            {"id": "a", "content": "", "priority": "top", "depends_on": ["b", "ghost"]},
            {"id": "b", "content": "B", "depends_on": ["a"], "phase_id": "nope"},
            {"id": "a", "content": "again", "status": "in_progress"},
            "not an entry",
        ],
    }
    with pytest.raises(DocumentInvalid) as caught:
        validate(raw)
    paths = {p.path for p in caught.value.problems}
    assert paths == {
        "$.schema_version",
        "$.surprise",
        "$.phases[0].name",
        "$.phases[1].id",
        "$.entries[0].content",
        "$.entries[0].priority",
        "$.entries[0].depends_on[1]",
        "$.entries[0].depends_on",  # the cycle a -> b -> a
        "$.entries[1].phase_id",
        "$.entries[2].id",
        "$.entries[2].status",
        "$.entries[3]",
    }
    details = caught.value.details["problems"]
    assert {d["path"] for d in details} == paths
    assert all(d["message"] for d in details)


def test_markdown_problems_carry_their_line() -> None:
    text = '# TODO\n\n- [ ] fine\n- [ ] bad priority\n  <!-- entry {"priority": "urgent"} -->\n'
    with pytest.raises(DocumentInvalid) as caught:
        read(text)
    (problem,) = caught.value.problems
    assert (problem.path, problem.line) == ("$.entries[1].priority", 4)


# Markdown


def test_a_hand_written_checklist_imports() -> None:
    text = """# Launch

Ship the thing.

## Budget

- cap_usd: 20

## Design

Decide what to build.

- [x] Sketch the API
- [ ] Review it
  > With the team.
  - everyone agreed

### Memory

- keep it small

## Entries

* [ ] Write the README
"""
    document = read(text)
    assert document.project_context == "Ship the thing."
    assert document.budget == DocumentBudget(caps=BudgetCaps(cap_usd=20))
    (phase,) = document.phases
    assert (phase.id, phase.name, phase.description) == (
        "phase-1",
        "Design",
        "Decide what to build.",
    )
    assert [n.text for n in phase.memory] == ["keep it small"]
    assert [(e.content, e.status, e.phase_id) for e in document.entries] == [
        ("Sketch the API", "completed", "phase-1"),
        ("Review it", "pending", "phase-1"),
        ("Write the README", "pending", None),
    ]
    assert document.entries[1].spec == Spec(
        requirements="With the team.", acceptance_criteria=["everyone agreed"]
    )
    assert all(e.id is None for e in document.entries)


def test_ticking_a_box_in_an_exported_checklist_completes_the_entry() -> None:
    document = PlanDocument(
        format=FORMAT,
        schema_version=2,
        entries=[DocumentEntry(id="a", content="A", status="failed", priority="critical")],
    )
    text = render(document).replace("- [ ] A", "- [x] A")
    (entry,) = read(text).entries
    assert (entry.status, entry.priority) == ("completed", "critical")


def test_entries_keep_their_order_when_the_checklist_groups_them_by_phase() -> None:
    document = PlanDocument(
        format=FORMAT,
        schema_version=2,
        phases=[DocumentPhase(id="p", name="P", seq=0)],
        entries=[
            DocumentEntry(id="a", content="A"),
            DocumentEntry(id="b", content="B", phase_id="p"),
            DocumentEntry(id="c", content="C"),
        ],
    )
    text = render(document)
    assert text.index("- [ ] B") < text.index("- [ ] A")
    assert read(text) == document
    _raw, lines, problems = parse(text)
    assert not problems
    assert lines["$.entries[0]"] > lines["$.entries[1]"]


# The JSON Schema


def test_the_checked_in_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_bytes() == schema_json(), (
        "docs/todo-document.schema.json is stale: run "
        "`.venv/bin/python -m orchestrator.documents > docs/todo-document.schema.json`"
    )


def test_the_schema_describes_the_document() -> None:
    schema = msgspec.json.decode(schema_json())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    top = schema["$defs"]["PlanDocument"]
    assert set(top["required"]) == {"format", "schema_version"}
    assert top["properties"]["schema_version"] == {"enum": [2]}
    assert {"DocumentEntry", "DocumentPhase", "DocumentNote", "BudgetCaps"} <= set(schema["$defs"])


# Snapshot stores: one contract, both backends


@pytest.fixture(params=["redis", "directory"])
async def store(
    request: pytest.FixtureRequest, client: Redis, tmp_path: Path
) -> AsyncIterator[SnapshotStore]:
    if request.param == "redis":
        yield RedisSnapshots(client)
    else:
        yield DirectorySnapshots(tmp_path / "vault")


def draft(body: bytes, snapshot_id: str) -> Snapshot:
    return Snapshot(
        id=snapshot_id,
        version=0,
        digest=digest(body),
        created_at=1,
        todoID="todo_1",
        todo_version=3,
        entries=0,
        phases=0,
        bytes=len(body),
    )


@pytest.mark.anyio
async def test_a_store_keeps_versions_and_stores_an_unchanged_document_once(
    store: SnapshotStore, workspace: str
) -> None:
    one, two = b'{"v":1}', b'{"v":2}'
    first, created = await store.put(workspace, one, draft(one, "snap_1"))
    assert created
    assert first.version == 1
    same, created = await store.put(workspace, one, draft(one, "snap_2"))
    assert not created
    assert same == first
    second, created = await store.put(workspace, two, draft(two, "snap_3"))
    assert created
    assert second.version == 2
    back, created = await store.put(workspace, one, draft(one, "snap_4"))
    assert created
    assert back.version == 3
    assert [s.id for s in await store.snapshots(workspace)] == ["snap_1", "snap_3", "snap_4"]
    assert await store.get(workspace, "snap_4") == (back, one)
    assert await store.get(workspace, "snap_9") is None
    assert await store.snapshots(f"{workspace}_other") == []


@pytest.mark.anyio
async def test_concurrent_syncs_of_one_document_store_it_once(
    store: SnapshotStore, workspace: str
) -> None:
    import anyio

    body = b'{"same":true}'
    results: list[tuple[Snapshot, bool]] = []

    async def put(i: int) -> None:
        results.append(await store.put(workspace, body, draft(body, f"snap_{i}")))

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(put, i)
    assert sum(created for _, created in results) == 1
    assert len({s.id for s, _ in results}) == 1
    assert len(await store.snapshots(workspace)) == 1


# Through the API


def add_plan(api: httpx.Client) -> None:
    phase = api.post("/phases", json={"id": "phs_design", "name": "Design", "status": "active"})
    assert phase.status_code == 201, phase.text
    notes = api.post("/phases/phs_design/memory", json={"notes": [{"text": "keep it small"}]})
    assert notes.status_code == 201, notes.text
    entries = [
        {"id": "e_api", "content": "Sketch the API", "phase_id": "phs_design", "priority": "high"},
        {
            "id": "e_impl",
            "content": "Build it",
            "depends_on": ["e_api"],
            "spec": {"requirements": "All of it", "acceptance_criteria": ["tests pass"]},
            "budget_usd": 5.0,
            "files": ["src/b.py", "src/a.py"],
        },
    ]
    created = api.post("/todo/entries", json={"entries": entries})
    assert created.status_code == 201, created.text
    assert api.patch("/todo", json={"project_context": "A service."}).status_code == 200
    assert api.patch("/budget", json={"cap_usd": 50, "max_workers": 2}).status_code == 200


def test_export_as_json_and_markdown(api: httpx.Client) -> None:
    empty = api.get("/vault/export")
    assert empty.status_code == 200
    assert empty.json() == {"format": "orchestrator-todo", "schema_version": 2}
    add_plan(api)
    response = api.get("/vault/export?format=json")
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["project_context"] == "A service."
    assert document["budget"] == {"caps": {"cap_usd": 50.0, "max_workers": 2}}
    phase = dict(document["phases"][0])
    assert [n["text"] for n in phase.pop("memory")] == ["keep it small"]
    assert phase == {"id": "phs_design", "name": "Design", "seq": 0, "status": "active"}
    assert [e["id"] for e in document["entries"]] == ["e_api", "e_impl"]
    assert document["entries"][1]["files"] == ["src/a.py", "src/b.py"]
    text = api.get("/vault/export", params={"format": "markdown"})
    assert text.headers["content-type"].startswith("text/markdown")
    assert "## Phase: Design" in text.text
    assert "- [ ] Build it" in text.text
    assert msgspec.to_builtins(read(text.text)) == document
    bad = api.get("/vault/export?format=yaml")
    assert bad.status_code == 400
    assert bad.json()["error"]["details"]["parameter"] == "format"


def test_the_schema_is_served(api: httpx.Client) -> None:
    response = api.get("/vault/schema")
    assert response.status_code == 200
    assert response.content == SCHEMA_FILE.read_bytes()


def sync(api: httpx.Client, **headers: str) -> httpx.Response:
    return api.post("/vault/sync", headers=headers)


def check_vault(api: httpx.Client) -> None:
    assert api.get("/vault").json() == {"snapshots": []}
    add_plan(api)
    first = sync(api)
    assert first.status_code == 201, first.text
    snapshot = first.json()["snapshot"]
    assert first.json()["created"] is True
    assert snapshot["id"].startswith("snap_")
    assert snapshot["version"] == 1
    assert snapshot["digest"].startswith("sha256:")
    assert snapshot["entries"] == 2

    unchanged = sync(api)
    assert unchanged.status_code == 200
    assert unchanged.json() == {"snapshot": snapshot, "created": False}

    assert api.patch("/todo/entries/e_api/priority", json={"priority": "low"}).status_code == 200
    second = sync(api, **{"Idempotency-Key": "sync-2"})
    assert second.status_code == 201
    assert second.json()["snapshot"]["version"] == 2
    assert sync(api, **{"Idempotency-Key": "sync-2"}).json() == second.json()

    listed = api.get("/vault").json()["snapshots"]
    assert [s["version"] for s in listed] == [1, 2]
    one = api.get(f"/vault/{snapshot['id']}")
    assert one.status_code == 200
    assert one.json()["snapshot"] == snapshot
    assert one.json()["document"]["entries"][0]["priority"] == "high"  # as it was then
    as_text = api.get(f"/vault/{snapshot['id']}?format=markdown")
    assert as_text.headers["content-type"].startswith("text/markdown")
    assert msgspec.to_builtins(read(as_text.text)) == one.json()["document"]
    missing = api.get("/vault/snap_nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "SNAPSHOT_NOT_FOUND"


def test_the_vault_keeps_versions_in_redis(api: httpx.Client) -> None:
    check_vault(api)


@pytest.fixture
def directory_api(
    make_server: Any, tmp_path: Path, workspace: str
) -> Iterator[tuple[httpx.Client, Path]]:
    vault_dir = tmp_path / "vault"
    server: ServerProcess = make_server(ORCH_VAULT_DIR=str(vault_dir))
    with httpx.Client(base_url=server.workspace_url(workspace), timeout=10) as client:
        yield client, vault_dir


def test_the_vault_keeps_versions_in_a_directory(
    directory_api: tuple[httpx.Client, Path], workspace: str
) -> None:
    api, vault_dir = directory_api
    check_vault(api)
    assert len(list((vault_dir / workspace / "snapshots").glob("*.json"))) == 2
    assert len(list((vault_dir / workspace / "documents").glob("*.json"))) == 2


def test_a_sync_emits_vault_synced_and_an_unchanged_one_emits_nothing(
    api: httpx.Client,
) -> None:
    add_plan(api)
    before = api.get("/debug-dump").json()["log"]["last_seq"]
    snapshot = sync(api).json()["snapshot"]
    sync(api)
    events = api.get("/debug-dump").json()["events"]
    synced = [e for e in events if e["seq"] > before]
    assert [e["type"] for e in synced] == ["vault.synced"]
    assert synced[0]["payload"] == {"snapshot": snapshot, "backend": "redis"}


# Schema version 1 documents: still read, in version 2's shapes

V1_DOCUMENT: dict[str, Any] = {  # as version 1 exported it
    "format": "orchestrator-todo",
    "schema_version": 1,
    "phases": [{"id": "p", "name": "P", "order": 3, "status": "active"}],
    "entries": [
        {"id": "a", "content": "A", "priority": -2, "phase_id": "p"},
        {"id": "b", "content": "B", "spec": {"text": "do b", "acceptance": ["b done"]}},
        {"id": "c", "content": "C", "priority": 7, "spec": {"acceptance": ["c done"]}},
        {"id": "d", "content": "D", "priority": 250},
        {"id": "e", "content": "E", "priority": 0},
    ],
}


def test_a_schema_version_1_document_is_read_in_version_2_shapes() -> None:
    document = validate(V1_DOCUMENT)
    assert document.schema_version == 2
    assert [(p.id, p.seq) for p in document.phases] == [("p", 3)]
    assert [e.priority for e in document.entries] == ["low", "medium", "high", "critical", "medium"]
    assert [e.spec for e in document.entries] == [
        None,
        Spec(requirements="do b", acceptance_criteria=["b done"], revision=1),
        Spec(acceptance_criteria=["c done"], revision=1),
        None,
        None,
    ]
    # The Markdown that version 1 wrote: its header, comments and quotes.
    text = """<!-- orchestrator-todo {"format":"orchestrator-todo","schema_version":1} -->
# TODO

## Phase: P
<!-- phase {"id":"p","order":3,"status":"active"} -->

- [ ] A
  <!-- entry {"id":"a","priority":-2} -->
  > do a
  - a done
- [ ] B
  <!-- entry {"id":"b","priority":5,"spec":{"text":" spaced ","acceptance":[]}} -->
  > spaced
"""
    a, b = read(text).entries
    assert (a.priority, a.spec) == (
        "low",
        Spec(requirements="do a", acceptance_criteria=["a done"]),
    )
    assert (b.priority, b.spec) == ("high", Spec(requirements=" spaced ", revision=1))
    assert read(text).phases[0].seq == 3


def test_a_version_1_document_imports(api: httpx.Client) -> None:
    started = api.post("/import", json={"document": V1_DOCUMENT})
    assert started.status_code in (200, 201, 202), started.text
    job_id = started.json()["importJobID"]
    for _ in range(200):
        job = api.get(f"/import/{job_id}").json()
        if job["status"] != "running":
            break
        time.sleep(0.05)
    assert job["status"] == "completed", job
    todo = api.get("/todo").json()
    assert [e["priority"] for e in todo["entries"]] == [
        "low",
        "medium",
        "high",
        "critical",
        "medium",
    ]
    assert todo["entries"][1]["spec"]["requirements"] == "do b"
    assert [(p["id"], p["seq"], p["container_id"]) for p in todo["phases"]] == [("p", 3, None)]
    exported = api.get("/vault/export").json()
    assert exported["schema_version"] == 2
    assert exported["phases"][0]["seq"] == 3
