"""The Master TODO and phases in the product's published shapes (API.md parts 3 and 5), and
workspaces recorded in the earlier shapes: they replay and rebuild into the new ones.

``fixtures/old_shapes_stream.json`` holds the raw stream entries an earlier version wrote
(captured with ``XRANGE`` after driving its API: integer priorities, ``{text, acceptance}``
specs, phases with ``order``), and ``fixtures/old_shapes_todo.json`` the ``GET /todo`` it
answered for them.
"""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from redis.asyncio import Redis

from orchestrator.keys import WorkspaceKeys
from orchestrator.redis_server import RedisServer
from tests.servers import ROOT, ServerProcess

FIXTURES = Path(__file__).parent / "fixtures"
OLD_STREAM = json.loads((FIXTURES / "old_shapes_stream.json").read_text())["entries"]
OLD_TODO = json.loads((FIXTURES / "old_shapes_todo.json").read_text())

# API.md part 3, verbatim: the product's todo page.
PUBLISHED_ENTRY: dict[str, Any] = {
    "id": "entry_01HMZ...",
    "seq": 1,
    "type": "task",
    "content": "Generate OpenAPI client scaffolding",
    "spec": {
        "requirements": "...",
        "acceptance_criteria": ["..."],
        "files_to_create": ["src/client.ts"],
        "files_to_modify": ["package.json"],
        "patterns": "...",
        "api_contract": "...",
        "examples": "...",
        "integration_points": "...",
        "authored_by": "specs-agent",
        "last_edited": 1717691300000,
        "revision": 4,
    },
    "spec_frozen": False,
    "status": "in_progress",
    "priority": "high",
    "depends_on": [],
    "children": [],
    "parallelizable": True,
    "parallel_group": "scaffold",
    "budget_usd": 25,
    "spent_usd": 4.2,
    "budget_rounds": 5,
    "rounds_completed": 1,
    "created_by": "user",
    "assigned_to": "session_01HMZ...",
    "session_ids": ["session_01HMZ..."],
}
# API.md part 5: the published phase list item.
PUBLISHED_PHASE: dict[str, Any] = {
    "id": "phs_...",
    "seq": 0,
    "name": "...",
    "status": "pending",
    "phase_rounds": 3,
    "container_id": "ctr_...",
}
# What the server owns: an entry is created pending and unworked, its spec stamped.
SERVER_OWNED = {"id", "seq", "status", "spent_usd", "rounds_completed", "assigned_to"}
SERVER_OWNED_SPEC = {"last_edited", "revision"}


def json_type(value: Any) -> str:
    """A value's JSON type (a number is a number, integral or not)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def assert_published_types(published: dict[str, Any], served: dict[str, Any]) -> None:
    for field, value in published.items():
        assert field in served, f"{field} missing"
        if value is None or served[field] is None:
            continue  # null where unknown
        assert json_type(served[field]) == json_type(value), field
        if isinstance(value, dict):
            assert_published_types(value, served[field])
        if isinstance(value, list) and value and served[field]:
            assert json_type(served[field][0]) == json_type(value[0]), field


def test_the_published_entry_round_trips(api: httpx.Client) -> None:
    sent = {k: v for k, v in PUBLISHED_ENTRY.items() if k not in SERVER_OWNED | {"session_ids"}}
    sent["spec"] = {k: v for k, v in sent["spec"].items() if k not in SERVER_OWNED_SPEC}
    created = api.post("/todo/entries", json={"entries": [sent]})
    assert created.status_code == 201, created.text
    [entry] = created.json()["entries"]
    read = api.get(f"/todo/entries/{entry['id']}").json()["entry"]
    assert read == entry
    assert_published_types(PUBLISHED_ENTRY, read)
    for field, value in sent.items():
        if field != "spec":
            assert read[field] == value, field
    assert read["spec"] == {**sent["spec"], "last_edited": read["created_at"], "revision": 1}
    assert (read["status"], read["seq"], read["spent_usd"], read["assigned_to"]) == (
        "pending",
        1,
        0,
        None,
    )
    # The whole published spec goes through PUT (the server's fields ignored): as it is, it
    # changes nothing; edited, it counts one revision.
    url = f"/todo/entries/{entry['id']}/spec"
    same = api.put(url, json=PUBLISHED_ENTRY["spec"]).json()["entry"]
    assert (same["spec"], same["version"]) == (read["spec"], read["version"])
    put = api.put(url, json={**PUBLISHED_ENTRY["spec"], "patterns": "more"})
    assert put.status_code == 200, put.text
    spec = put.json()["entry"]["spec"]
    assert (spec["revision"], spec["authored_by"], spec["patterns"]) == (2, "specs-agent", "more")
    assert_published_types(PUBLISHED_ENTRY["spec"], spec)
    for listed in api.get("/todo").json()["entries"]:
        assert_published_types(PUBLISHED_ENTRY, listed)


def test_the_published_phase_round_trips(api: httpx.Client) -> None:
    sent = {k: v for k, v in PUBLISHED_PHASE.items() if k != "id"}
    created = api.post("/phases", json=sent)
    assert created.status_code == 201, created.text
    phase = created.json()["phase"]
    assert {k: phase[k] for k in sent} == sent
    assert_published_types(PUBLISHED_PHASE, phase)
    bare = api.post("/phases", json={"name": "next"}).json()["phase"]
    assert (bare["seq"], bare["container_id"]) == (1, None)
    listed = api.get("/phases").json()["phases"]
    assert [p["seq"] for p in listed] == [0, 1]
    for item in listed:
        assert set(PUBLISHED_PHASE) <= set(item)
    moved = api.patch(f"/phases/{bare['id']}", json={"container_id": "ctr_2"}).json()["phase"]
    assert (moved["container_id"], moved["version"]) == ("ctr_2", 2)


# Recorded in the old shapes

PRIORITIES = {  # the old integer, and the word it reads as (orchestrator.upcast.word_of)
    "entry_schema": (10, "high"),
    "entry_low": (-5, "low"),
    "entry_mid": (0, "medium"),
    "entry_top": (1000, "critical"),
    "entry_one": (100, "critical"),  # created at 1, then PATCHed to 100
}


def expected_todo() -> dict[str, Any]:
    """The old ``GET /todo``, in the new shapes: nothing else differs."""
    entries = []
    for old in OLD_TODO["entries"]:
        number, word = PRIORITIES[old["id"]]
        assert old["priority"] == number
        text, acceptance = old["spec"]["text"], old["spec"]["acceptance"]
        spec = {
            "requirements": text,
            "acceptance_criteria": acceptance,
            "files_to_create": [],
            "files_to_modify": [],
            "patterns": "",
            "api_contract": "",
            "examples": "",
            "integration_points": "",
            "authored_by": None,
            "last_edited": None,
            "revision": 1 if text or acceptance else 0,
        }
        entries.append({**old, "priority": word, "spec": spec})
    phases = []
    for old in OLD_TODO["phases"]:
        phase = {k: v for k, v in old.items() if k != "order"}
        phases.append({**phase, "seq": old["order"], "container_id": None})
    return {**OLD_TODO, "entries": entries, "phases": phases}


async def record_old_stream(client: Redis, workspace: str) -> None:
    keys = WorkspaceKeys(workspace)
    for entry in OLD_STREAM:
        await client.xadd(keys.events, entry["fields"], id=entry["id"])
    await client.hset(keys.meta, "seq", len(OLD_STREAM))
    # As the append script kept it: every event of the fixture is a domain event.
    await client.hset(keys.versions, "plan", len(OLD_STREAM))


@pytest.mark.anyio
async def test_a_stream_recorded_in_the_old_shapes_replays_into_the_new(
    server: ServerProcess, client: Redis, workspace: str
) -> None:
    await record_old_stream(client, workspace)
    async with httpx.AsyncClient(base_url=server.workspace_url(workspace), timeout=10) as api:
        await check_replayed(api)
    # The log itself is never rewritten.
    raw: Any = await client.xrange(WorkspaceKeys(workspace).events, count=len(OLD_STREAM))
    assert [{k.decode(): v.decode() for k, v in f.items()} for _, f in raw] == [
        e["fields"] for e in OLD_STREAM
    ]


async def check_replayed(api: httpx.AsyncClient) -> None:
    todo = (await api.get("/todo")).json()
    assert todo == expected_todo()
    specs = {e["id"]: e["spec"] for e in todo["entries"]}
    assert (specs["entry_mid"]["requirements"], specs["entry_mid"]["revision"]) == (
        "REST endpoints",
        1,
    )
    assert specs["entry_schema"]["acceptance_criteria"] == ["users table exists", "indexes"]
    assert [(p["id"], p["seq"]) for p in todo["phases"]] == [("phs_design", 0), ("phs_build", 7)]
    # The TODO's own log serves the old events in the new shapes too.
    logged = (await api.get("/todo/events?limit=1000")).json()["events"]
    changed = next(e for e in logged if e["type"] == "todo.priority_changed")
    assert changed["payload"]["entries"][0]["priority"] == "critical"
    # The verify recorded then still holds: it checked the old acceptance criteria.
    design = next(p for p in todo["phases"] if p["id"] == "phs_design")
    assert design["verification"]["passed"] is True

    # New writes continue the old workspace, in the new shapes.
    patched = await api.patch("/todo/entries/entry_low/priority", json={"priority": "high"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["entry"]["priority"] == "high"


@pytest.mark.anyio
async def test_orchestrator_rebuild_gives_an_old_workspace_the_new_shapes(
    server: ServerProcess, client: Redis, workspace: str, redis_url: str
) -> None:
    await record_old_stream(client, workspace)
    keys = WorkspaceKeys(workspace)
    # A read model an earlier version built: its entries and phases in the old shapes.
    old_entries = {e["id"]: json.dumps(e) for e in OLD_TODO["entries"]}
    await client.hset(keys.entries, mapping=old_entries)
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-m", "orchestrator", "rebuild", workspace],
            cwd=ROOT,
            env={"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == f"rebuilt {workspace} up to seq {len(OLD_STREAM)}"
    stored = await client.hgetall(keys.entries)
    for raw in stored.values():
        entry = json.loads(raw)
        assert isinstance(entry["priority"], str)
        assert set(entry["spec"]) >= {"requirements", "acceptance_criteria", "revision"}
    for raw in (await client.hgetall(keys.phases)).values():
        assert "order" not in json.loads(raw)
    async with httpx.AsyncClient(base_url=server.workspace_url(workspace), timeout=10) as api:
        assert (await api.get("/todo")).json() == expected_todo()


@pytest.mark.anyio
async def test_a_read_model_built_in_the_old_shapes_is_read_in_the_new(
    client: Redis, workspace: str
) -> None:
    from projections.plan import read_plan

    keys = WorkspaceKeys(workspace)
    await client.hset(keys.entries, mapping={e["id"]: json.dumps(e) for e in OLD_TODO["entries"]})
    await client.hset(keys.phases, mapping={p["id"]: json.dumps(p) for p in OLD_TODO["phases"]})
    plan = await read_plan(client, workspace)
    assert {e.id: e.priority for e in plan.entries.values()} == {
        k: word for k, (_, word) in PRIORITIES.items()
    }
    assert [(p.id, p.seq) for p in plan.ordered_phases()] == [("phs_design", 0), ("phs_build", 7)]


# The spec's author: from the body, else the token's name


@pytest.fixture(scope="module")
def auth_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("shapes-auth-redis"), appendonly=False)
    server.start()
    yield server.url
    server.stop()


AGENT = ("--name", "specs-agent")


def test_a_spec_is_authored_by_the_body_or_the_tokens_name(
    make_server: Any, auth_redis: str
) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "orchestrator", "token", "create", "--admin", *AGENT, "--json"],
        cwd=ROOT,
        env={"REDIS_URL": auth_redis, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert made.returncode == 0, made.stderr
    secret = json.loads(made.stdout)["token"]
    server: ServerProcess = make_server(auth_redis)
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=server.workspace_url("ws_a"), headers=headers, timeout=10) as api:
        body = {"entries": [{"id": "e", "content": "c", "spec": {"requirements": "r"}}]}
        [entry] = api.post("/todo/entries", json=body).json()["entries"]
        assert entry["spec"]["authored_by"] == "specs-agent"
        named = api.put("/todo/entries/e/spec", json={"requirements": "r", "authored_by": "me"})
        assert (named.json()["entry"]["spec"]["authored_by"], named.json()["entry"]["version"]) == (
            "me",
            2,
        )
        unnamed = api.put("/todo/entries/e/spec", json={"requirements": "r2"}).json()["entry"]
        assert (unnamed["spec"]["authored_by"], unnamed["spec"]["revision"]) == ("specs-agent", 3)
