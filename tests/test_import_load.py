"""Large documents do not hold the server up: they are parsed off the event loop, reading
stops at the first entry past the limit, and a workspace runs a bounded number of imports
at once."""

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from orchestrator import importer, markdown
from orchestrator.documents import MAX_ENTRIES, DocumentInvalid
from orchestrator.settings import Settings
from tests.servers import ServerProcess
from tests.test_import import finished, git_repo, start

# Far above what /healthz takes on a loaded machine, far below the 20 s a multi-megabyte
# checklist held the event loop for when it was parsed on it.
HEALTHZ_BOUND_S = 5.0


def checklist(entries: int, spec: int = 0) -> str:
    lines = ["# TODO", ""]
    for i in range(entries):
        lines.append(f"- [ ] Task number {i} of a long plan")
        if spec:
            lines += [f"  > {'x' * spec}", "  - it works"]
    return "\n".join(lines) + "\n"


def test_reading_stops_at_the_first_entry_past_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read: list[int] = []
    line = markdown._Reader.line

    def counted(self: markdown._Reader, number: int, text: str) -> None:
        read.append(number)
        line(self, number, text)

    monkeypatch.setattr(markdown._Reader, "line", counted)
    text = checklist(20 * MAX_ENTRIES)
    past = 2 + MAX_ENTRIES + 1  # the heading, a blank line, then one entry a line
    with pytest.raises(DocumentInvalid) as invalid:
        markdown.read(text)
    (problem,) = invalid.value.problems
    assert problem.path == "$.entries"
    assert problem.line == past
    assert problem.message == f"more than {MAX_ENTRIES} entries: reading stopped at line {past}"
    assert len(read) == past  # not one line more


def test_a_json_document_over_the_limit_is_refused_before_its_entries_are_walked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    walked: list[Any] = []
    monkeypatch.setattr(importer, "validate", lambda *args: walked.append(args))
    raw = {
        "format": "orchestrator-todo",
        "schema_version": 1,
        "entries": [{"content": f"task {i}"} for i in range(5 * MAX_ENTRIES)],
    }
    with pytest.raises(DocumentInvalid) as invalid:
        importer.read_document(raw, Settings().max_memory_notes, "$.document")
    (problem,) = invalid.value.problems
    assert problem.path == "$.document.entries"
    assert problem.message == f"at most {MAX_ENTRIES} entries, not {5 * MAX_ENTRIES}"
    assert walked == []


class Prober:
    """Asks /healthz over and over until stopped; keeps what went wrong."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.answers = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._probe, daemon=True)

    def _probe(self) -> None:
        with httpx.Client(timeout=HEALTHZ_BOUND_S) as client:
            while not self.stop.is_set():
                try:
                    assert client.get(self.base_url + "/healthz").status_code == 200
                    self.answers += 1
                except (httpx.TimeoutException, AssertionError) as exc:
                    self.failures.append(repr(exc))
                time.sleep(0.05)

    def __enter__(self) -> "Prober":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=2 * HEALTHZ_BOUND_S)


@pytest.fixture
def roomy(make_server: Callable[..., ServerProcess], tmp_path: Path) -> tuple[ServerProcess, Path]:
    server = make_server(ORCH_IMPORT_LOCAL_ROOTS=str(tmp_path), ORCH_IMPORT_TIMEOUT_S="90")
    return server, tmp_path


@pytest.mark.timeout(120)
def test_the_server_answers_while_a_multi_megabyte_checklist_is_imported(
    roomy: tuple[ServerProcess, Path], workspace: str
) -> None:
    server, tmp_path = roomy
    over = checklist(20 * MAX_ENTRIES)  # 8 MB, 200 000 entries
    under = checklist(MAX_ENTRIES - 1000, spec=600)  # 6 MB of entries the import keeps
    assert len(over) > 7_000_000
    assert len(under) > 5_000_000
    repo = git_repo(tmp_path / "repo", {"over/TODO.md": over, "under/TODO.md": under})
    with (
        httpx.Client(base_url=server.workspace_url(workspace), timeout=10) as api,
        Prober(server.base_url) as prober,
    ):
        failed = start(api, {"repoUrl": str(repo), "path": "over/TODO.md"})
        job = finished(api, failed["importJobID"], timeout=90)
        assert job["status"] == "failed"
        assert job["problems"] == [
            {
                "path": "$.entries",
                "message": f"more than {MAX_ENTRIES} entries: reading stopped at line "
                f"{MAX_ENTRIES + 3}",
                "line": MAX_ENTRIES + 3,
            }
        ]
        job = finished(
            api,
            start(api, {"repoUrl": str(repo), "path": "under/TODO.md"})["importJobID"],
            timeout=90,
        )
        assert job["status"] == "completed", job["error"]
        assert job["entries"] == MAX_ENTRIES - 1000
    assert prober.failures == []
    assert prober.answers > 0


@pytest.mark.timeout(120)
def test_the_server_answers_while_a_document_in_the_request_is_parsed(
    roomy: tuple[ServerProcess, Path], workspace: str
) -> None:
    server, _ = roomy
    text = checklist(MAX_ENTRIES - 1000, spec=40)
    assert 0.8 < len(msgspec.json.encode({"document": text})) / Settings().max_body_bytes < 1
    with (
        httpx.Client(base_url=server.workspace_url(workspace), timeout=90) as api,
        Prober(server.base_url) as prober,
    ):
        job = finished(api, start(api, {"document": text})["importJobID"], timeout=90)
        assert job["status"] == "completed"
        over = api.post("/import", json={"document": checklist(2 * MAX_ENTRIES)})
        assert over.status_code == 422
        assert over.json()["error"]["details"]["problems"][0]["path"] == "$.entries"
    assert prober.failures == []
    assert prober.answers > 0


def test_a_workspace_runs_a_bounded_number_of_imports_at_once(
    make_server: Callable[..., ServerProcess], workspace: str
) -> None:
    server = make_server(
        ORCH_IMPORT_MAX_CONCURRENT="1",
        ORCH_IMPORT_TIMEOUT_S="3",
        ORCH_IMPORT_PROTOCOLS="http",
        ORCH_IMPORT_ALLOW_NETWORKS="127.0.0.0/8",
    )
    with (
        socket.socket() as silent,  # accepts connections, never answers: the clone hangs
        httpx.Client(base_url=server.workspace_url(workspace), timeout=10) as api,
        httpx.Client(base_url=server.workspace_url(f"{workspace}_b"), timeout=10) as other,
    ):
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        body = {"repoUrl": f"http://127.0.0.1:{silent.getsockname()[1]}/hangs.git"}
        first = start(api, body)
        extra = api.post("/import", json=body)
        assert extra.status_code == 429
        error = extra.json()["error"]
        assert error["code"] == "TOO_MANY_IMPORTS"
        assert error["details"] == {"limit": 1}
        assert extra.headers["retry-after"] == "1"
        assert api.post("/import", json={"document": "- [ ] x"}).status_code == 429
        other_job = start(other, body)  # another workspace has its own allowance
        # The first job ends (at its timeout), and gives its slot back.
        assert finished(api, first["importJobID"])["status"] == "failed"
        assert finished(other, other_job["importJobID"])["status"] == "failed"
        again = start(api, {"document": "- [ ] x"})
        assert finished(api, again["importJobID"])["status"] == "completed"
        kinds = [e["type"] for e in api.get("/debug-dump").json()["events"]]
        assert kinds.count("import.started") == 2
