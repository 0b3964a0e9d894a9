"""Import jobs (API.md part 5): a document, a git repository or a vault snapshot imported in
the background, all or nothing, with progress, events, and every problem named.

The repositories here are local, so the server these tests share allows local imports
under the test run's temporary directory (ORCH_IMPORT_LOCAL_ROOTS); tests/test_import_access.py
covers what a server refuses by default."""

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from orchestrator import repos
from orchestrator.imports import ABANDON_GRACE_S, as_seen
from orchestrator.repo_access import Target
from orchestrator.transfer import ImportJob, ImportSource
from tests.servers import ServerProcess
from tests.test_vault import add_plan

HAND_WRITTEN = {
    "format": "orchestrator-todo",
    "schema_version": 1,
    "project_context": "Imported from a repository.",
    "phases": [{"id": "build", "name": "Build", "status": "active"}],
    "entries": [
        {"id": "setup", "content": "Set up the project", "phase_id": "build"},
        {"id": "parser", "content": "Write the parser", "depends_on": ["setup"]},
        {"content": "An entry nobody names"},
    ],
}


def git_repo(path: Path, files: dict[str, str]) -> Path:
    """A git repository with one commit holding ``files``."""
    path.mkdir(parents=True)

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git("add", "-A")
    git("-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q", "-m", "plan")
    return path


def start(api: httpx.Client, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = api.post("/import", json=body, headers=headers)
    assert response.status_code == 202, response.text
    started: dict[str, Any] = response.json()
    assert set(started) == {"importJobID", "todoID"}
    assert started["importJobID"].startswith("imp_")
    return started


def finished(api: httpx.Client, job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = api.get(f"/import/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        assert 0 <= job["progress"] <= 100
        if job["status"] != "running" or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def imported(api: httpx.Client, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    job = finished(api, start(api, body, **headers)["importJobID"])
    assert job["status"] == "completed", job
    return job


def events(api: httpx.Client) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api.get("/debug-dump").json()["events"]
    return found


def export(api: httpx.Client) -> dict[str, Any]:
    document: dict[str, Any] = api.get("/vault/export").json()
    return document


@pytest.fixture(scope="module")
def import_server(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[ServerProcess]:
    """A server that imports local repositories from under the test run's temporary
    directory (where every ``tmp_path`` is)."""
    roots = str(tmp_path_factory.getbasetemp())
    log = tmp_path_factory.mktemp("import-server") / "server.log"
    process = ServerProcess(redis_url, log, ORCH_IMPORT_LOCAL_ROOTS=roots)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def api(import_server: ServerProcess, workspace: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=import_server.workspace_url(workspace), timeout=10) as client:
        yield client


@pytest.fixture
def other(import_server: ServerProcess, workspace: str) -> Iterator[httpx.Client]:
    """A client of a second, empty workspace on the same server."""
    url = import_server.workspace_url(f"{workspace}_b")
    with httpx.Client(base_url=url, timeout=10) as client:
        yield client


# The round trip, through the live API


def test_export_import_export_gives_the_same_document(
    api: httpx.Client, other: httpx.Client
) -> None:
    add_plan(api)
    api.post("/todo/entries", json={"entries": [{"id": "e_late", "content": "Later"}]})
    assert api.patch("/todo/entries/e_late/status", json={"status": "blocked"}).status_code == 200
    document = export(api)
    job = imported(other, {"document": document})
    assert (job["progress"], job["stage"], job["error"]) == (100, "completed", None)
    assert (job["entries"], job["phases"]) == (3, 1)
    assert job["remapped"] == {"entries": {}, "phases": {}}
    assert export(other) == document
    todo = other.get("/todo").json()
    assert todo["id"] == job["todoID"]
    assert [e["seq"] for e in todo["entries"]] == [1, 2, 3]
    notes = other.get("/phases/phs_design/memory").json()
    assert [n["text"] for n in notes["notes"]] == ["keep it small"]
    assert other.get("/budget").json()["budget"]["caps"] == {"cap_usd": 50.0, "max_workers": 2}


def test_a_markdown_export_imports_back(api: httpx.Client, other: httpx.Client) -> None:
    add_plan(api)
    text = api.get("/vault/export?format=markdown").text
    job = imported(other, {"document": text})
    assert job["source"] == {"kind": "document", "format": "markdown"}
    assert export(other) == export(api)


# From a git repository


@pytest.mark.parametrize("scheme", ["path", "file://"])
def test_import_from_a_local_git_repository(api: httpx.Client, tmp_path: Path, scheme: str) -> None:
    repo = git_repo(tmp_path / "repo", {"TODO.json": msgspec.json.encode(HAND_WRITTEN).decode()})
    url = str(repo) if scheme == "path" else f"file://{repo}"
    job = imported(api, {"repoUrl": url})
    assert job["source"] == {"kind": "repo", "repoUrl": url, "file": "TODO.json", "format": "json"}
    todo = api.get("/todo").json()
    assert todo["project_context"] == "Imported from a repository."
    setup, parser, anonymous = todo["entries"]
    assert (setup["id"], setup["phase_id"]) == ("setup", "build")
    assert parser["depends_on"] == ["setup"]
    assert anonymous["id"].startswith("entry_")
    kinds = [e["type"] for e in events(api)]
    assert kinds[0] == "todo.updated"  # the TODO the job imports into, created at the start
    assert kinds[1] == "import.started"
    stages = [e["payload"]["job"]["stage"] for e in events(api) if e["type"] == "import.progress"]
    assert stages == ["cloning", "validating", "importing"]
    assert kinds[-1] == "import.completed"
    assert kinds.count("todo.created") == 3


def test_a_markdown_checklist_in_a_repository_imports(api: httpx.Client, tmp_path: Path) -> None:
    checklist = "# Plan\n\n- [x] Set up\n- [ ] Build\n  - it works\n"
    repo = git_repo(tmp_path / "repo", {".orchestrator/todo.md": checklist, "README.md": "hi"})
    job = imported(api, {"repoUrl": str(repo)})
    assert job["source"]["file"] == ".orchestrator/todo.md"
    entries = api.get("/todo").json()["entries"]
    assert [(e["content"], e["status"]) for e in entries] == [
        ("Set up", "completed"),
        ("Build", "pending"),
    ]
    assert entries[1]["spec"]["acceptance_criteria"] == ["it works"]


def test_a_named_file_on_a_branch(api: httpx.Client, tmp_path: Path) -> None:
    repo = git_repo(
        tmp_path / "repo", {"plans/q3.json": msgspec.json.encode(HAND_WRITTEN).decode()}
    )
    subprocess.run(["git", "branch", "-q", "plans"], cwd=repo, check=True)
    job = imported(api, {"repoUrl": str(repo), "ref": "plans", "path": "plans/q3.json"})
    assert job["source"]["file"] == "plans/q3.json"
    assert len(api.get("/todo").json()["entries"]) == 3


# Failure paths


def test_an_invalid_document_is_422_listing_every_problem_and_appends_nothing(
    api: httpx.Client,
) -> None:
    bad = {
        "format": "orchestrator-todo",
        "schema_version": 1,
        "entries": [
            {"id": "a", "content": "fine"},
            {"id": "b", "content": "", "depends_on": ["a", "ghost"]},
            {"id": "a", "content": "again", "budget_usd": -1},
        ],
        "phases": [{"id": "p", "name": "P", "status": "sideways"}],
    }
    response = api.post("/import", json={"document": bad}, headers={"Idempotency-Key": "k1"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_FAILED"
    paths = {p["path"] for p in error["details"]["problems"]}
    assert paths == {
        "$.document.entries[1].content",
        "$.document.entries[1].depends_on[1]",
        "$.document.entries[2].id",
        "$.document.entries[2].budget_usd",
        "$.document.phases[0].status",
    }
    assert "$.document.entries[1].content" in error["message"]
    assert api.get("/debug-dump").json()["log"]["last_seq"] == 0  # nothing appended
    assert api.get("/todo").json()["id"] is None


def test_an_invalid_document_in_a_repository_fails_the_job_with_its_problems(
    api: httpx.Client, tmp_path: Path
) -> None:
    bad = {**HAND_WRITTEN, "entries": [{"id": "x", "content": "ok"}, {"id": "y", "priority": "hi"}]}
    repo = git_repo(tmp_path / "repo", {"TODO.json": msgspec.json.encode(bad).decode()})
    job = finished(api, start(api, {"repoUrl": str(repo)})["importJobID"])
    assert job["status"] == "failed"
    assert f"TODO.json in {repo} is not a valid TODO document" in job["error"]
    assert {p["path"] for p in job["problems"]} == {"$.entries[1].content", "$.entries[1].priority"}
    assert api.get("/todo").json()["entries"] == []  # all or nothing: not even entry x
    assert events(api)[-1]["type"] == "import.failed"


def test_a_repository_without_a_document_fails_the_job_saying_so(
    api: httpx.Client, tmp_path: Path
) -> None:
    repo = git_repo(tmp_path / "repo", {"README.md": "no plan here"})
    job = finished(api, start(api, {"repoUrl": str(repo)})["importJobID"])
    assert job["status"] == "failed"
    assert job["error"] == (
        f"{repo} has no TODO document: looked for .orchestrator/todo.json, "
        ".orchestrator/todo.md, TODO.json, todo.json, TODO.md"
    )
    named = finished(api, start(api, {"repoUrl": str(repo), "path": "plan.json"})["importJobID"])
    assert named["error"] == f"{repo} has no file plan.json"


def test_not_json_fails_the_job_saying_so(api: httpx.Client, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo", {"TODO.json": "{not json"})
    job = finished(api, start(api, {"repoUrl": str(repo)})["importJobID"])
    assert job["status"] == "failed"
    assert job["error"].startswith(f"TODO.json in {repo} is not valid JSON")


@pytest.mark.parametrize("where", ["missing path", "not a repository"])
def test_an_unreachable_repository_fails_the_job_saying_so(
    api: httpx.Client, tmp_path: Path, where: str
) -> None:
    url = str(tmp_path / "nowhere")
    if where == "not a repository":
        (tmp_path / "nowhere").mkdir()
        (tmp_path / "nowhere" / "HEAD").write_text("a line git would quote\n")
    job = finished(api, start(api, {"repoUrl": url})["importJobID"])
    assert job["status"] == "failed"
    assert job["error"] == (
        f"could not clone {url}: check the URL, and that the repository is reachable from "
        "the server and readable without a password prompt"
    )
    assert job["stage"] == "failed"
    assert api.get("/todo").json()["entries"] == []


def processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_a_clone_that_hangs_is_killed_at_the_timeout(
    make_server: Callable[..., ServerProcess], workspace: str
) -> None:
    server = make_server(
        ORCH_IMPORT_TIMEOUT_S="1",
        ORCH_IMPORT_PROTOCOLS="http",
        ORCH_IMPORT_ALLOW_NETWORKS="127.0.0.0/8",
    )
    with (
        socket.socket() as silent,  # accepts connections, never answers
        httpx.Client(base_url=server.workspace_url(workspace), timeout=10) as api,
    ):
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hangs.git"
        job = finished(api, start(api, {"repoUrl": url})["importJobID"])
        assert job["status"] == "failed"
        assert job["error"] == "the import took longer than 1 s"
        deadline = time.monotonic() + 5
        while processes_mentioning(url) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_mentioning(url) == []


def test_a_protocol_git_may_not_use_is_refused(api: httpx.Client) -> None:
    response = api.post("/import", json={"repoUrl": "ext::sh -c touch% /tmp/pwned"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "REPO_URL_INVALID"
    assert api.get("/debug-dump").json()["log"]["last_seq"] == 0


@pytest.mark.parametrize(
    "body",
    [{}, {"repoUrl": "/tmp/x", "document": {}}, {"snapshotID": "snap_1", "document": "# x"}],
)
def test_exactly_one_source(api: httpx.Client, body: dict[str, Any]) -> None:
    response = api.post("/import", json=body)
    assert response.status_code == 422
    assert "exactly one of repoUrl, document, snapshotID" in response.json()["error"]["message"]


def test_unknown_jobs_and_snapshots_are_404(api: httpx.Client) -> None:
    response = api.get("/import/imp_nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "IMPORT_NOT_FOUND"
    response = api.post("/import", json={"snapshotID": "snap_nope"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "SNAPSHOT_NOT_FOUND"


# Idempotency and ids


def test_a_duplicate_import_with_the_same_key_is_one_job_and_one_set_of_entries(
    api: httpx.Client, tmp_path: Path
) -> None:
    repo = git_repo(tmp_path / "repo", {"TODO.json": msgspec.json.encode(HAND_WRITTEN).decode()})
    body = {"repoUrl": str(repo)}
    first = start(api, body, **{"Idempotency-Key": "import-1"})
    again = start(api, body, **{"Idempotency-Key": "import-1"})
    assert again == first
    assert finished(api, first["importJobID"])["status"] == "completed"
    assert start(api, body, **{"Idempotency-Key": "import-1"}) == first
    time.sleep(0.3)  # a second job, had one started, would have imported by now
    assert len(api.get("/todo").json()["entries"]) == 3
    kinds = [e["type"] for e in events(api)]
    assert kinds.count("import.started") == 1
    assert kinds.count("import.completed") == 1
    reused = api.post(
        "/import", json={"document": HAND_WRITTEN}, headers={"Idempotency-Key": "import-1"}
    )
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_importing_ids_the_workspace_has_remaps_them_and_their_references(
    api: httpx.Client,
) -> None:
    imported(api, {"document": HAND_WRITTEN})
    job = imported(api, {"document": HAND_WRITTEN})
    remapped = job["remapped"]
    assert set(remapped["entries"]) == {"setup", "parser"}
    assert set(remapped["phases"]) == {"build"}
    entries = api.get("/todo").json()["entries"]
    assert len(entries) == 6
    setup, parser = entries[3], entries[4]
    assert setup["id"] == remapped["entries"]["setup"]
    assert setup["phase_id"] == remapped["phases"]["build"]
    assert parser["depends_on"] == [setup["id"]]
    assert entries[1]["depends_on"] == ["setup"]  # the first import's, untouched
    # The workspace's project context is kept.
    assert api.get("/todo").json()["project_context"] == "Imported from a repository."


def test_a_workspace_is_restored_from_its_vault_after_a_purge(api: httpx.Client) -> None:
    add_plan(api)
    before = export(api)
    snapshot = api.post("/vault/sync").json()["snapshot"]
    assert api.post("/purge").status_code == 200
    assert export(api) == {"format": "orchestrator-todo", "schema_version": 2}
    job = imported(api, {"snapshotID": snapshot["id"]})
    assert job["source"] == {"kind": "snapshot", "snapshotID": snapshot["id"]}
    assert export(api) == before


def test_a_job_left_running_past_its_time_reads_as_abandoned() -> None:
    job = ImportJob(
        id="imp_1",
        todoID="todo_1",
        source=ImportSource(kind="document"),
        created_at=0,
        updated_at=0,
    )
    assert as_seen(job, 1_000, 10) == job
    late = as_seen(job, (10 + ABANDON_GRACE_S) * 1000 + 1, 10)
    assert late.status == "failed"
    assert late.error is not None
    assert late.error.startswith("abandoned")


@pytest.mark.anyio
async def test_without_git_a_repository_import_fails_saying_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on it
    with pytest.raises(repos.FetchFailed, match="git is not installed on the server"):
        await repos.fetch(Target(str(tmp_path), str(tmp_path), "file"), None, None, 1024)
