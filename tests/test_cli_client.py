"""The operator commands (tail, log, questions, todo, dump, purge, export, import) through the
real entry point, ``python -m orchestrator``, against a live server: output and exit codes."""

import json
import os
import pty
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.events import QuestionItem, QuestionOption, ToolRef
from orchestrator_sdk import Client
from orchestrator_sdk.inputs import ToolCallInput
from tests.servers import ROOT, ServerProcess, free_port
from tests.test_import import git_repo

ANSI = re.compile(r"\033\[[0-9;]*m")
PLAN = {"format": "orchestrator-todo", "schema_version": 1, "entries": [{"content": "from git"}]}
CALL: ToolCallInput = {"tool": "fs.read", "sessionID": "s1", "agentName": "builder", "status": "ok"}


class Cli:
    def __init__(self, url: str, workspace: str) -> None:
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "NO_COLOR"))},
            "ORCH_URL": url,
            "ORCH_WORKSPACE": workspace,
        }

    def __call__(
        self, *args: str, input: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=ROOT,
            env={**self.env, **env},
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=30,
        )

    def popen(self, *args: str) -> "subprocess.Popen[str]":
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def cli(server: ServerProcess, workspace: str) -> Cli:
    return Cli(server.base_url, workspace)


@pytest.fixture
def client(server: ServerProcess, workspace: str) -> Iterator[Client]:
    with Client(server.base_url, workspace) as made:
        yield made


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.stderr.startswith("orchestrator: "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    return done.stderr.strip()


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


# tail


def test_tail_replays_filters_and_resumes(cli: Cli, client: Client) -> None:
    client.update_config({"a": 1})
    client.record_tool_calls(CALL)
    client.create_entries([{"id": "e1", "content": "one"}, {"id": "e2", "content": "two"}])

    done = cli("tail", "--since", "0", "--limit", "4", "--json")
    assert done.returncode == 0, done.stderr
    events = json_lines(done.stdout)
    assert [(e["seq"], e["type"]) for e in events] == [
        (1, "config.updated"),
        (2, "tool.call"),
        (3, "todo.created"),
        (4, "todo.created"),
    ]
    assert events[1]["payload"]["tool"] == "fs.read"

    todo = cli("tail", "--since", "0", "--type", "todo.", "--type", "config.", "--limit", "3")
    lines = todo.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["1", "config.updated"],
        ["3", "todo.created"],
        ["4", "todo.created"],
    ]
    assert "entryID=e1" in lines[1]
    assert not ANSI.search(todo.stdout)  # not a terminal: no colour

    resumed = cli("tail", "--since", "3", "--limit", "1", "--json")
    assert [e["seq"] for e in json_lines(resumed.stdout)] == [4]
    coloured = cli("tail", "--since", "0", "--limit", "1", FORCE_COLOR="1")
    assert ANSI.search(coloured.stdout)
    assert ANSI.sub("", coloured.stdout).split()[:2] == ["1", "config.updated"]


def test_tail_follows_live_events(cli: Cli, client: Client) -> None:
    client.update_config({"before": True})
    tail = cli.popen("tail", "--limit", "2", "--json")
    try:
        deadline = time.monotonic() + 15
        while client.get_events_connections().count == 0:
            assert time.monotonic() < deadline, "tail never connected"
            time.sleep(0.05)
        client.update_config({"after": True})
        client.record_tool_calls(CALL)
        out, err = tail.communicate(timeout=15)
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    assert [(e["seq"], e["type"]) for e in json_lines(out)] == [
        (2, "config.updated"),
        (3, "tool.call"),
    ]


def test_tail_reports_a_reset(cli: Cli, client: Client) -> None:
    client.update_config({"a": 1})
    client.purge()
    done = cli("tail", "--since", "0", "--limit", "1", "--json")
    assert done.returncode == 0
    reset, purged = json_lines(done.stdout)
    assert (reset["type"], reset["seq"], reset["payload"]["reason"]) == ("reset", 1, "trimmed")
    assert purged["type"] == "orchestration.purged"
    assert "the log was reset (trimmed)" in done.stderr


# log


def test_log_as_a_table_and_as_json(cli: Cli, client: Client) -> None:
    client.record_tool_calls(
        [
            {**CALL, "title": "read the brief", "duration": 12},
            {**CALL, "tool": "bash", "status": "error", "entryID": "e1"},
            {**CALL, "sessionID": "s2"},
        ]
    )
    table = cli("log", "--tool", "fs.read")
    assert table.returncode == 0, table.stderr
    header, *rows, footer = table.stdout.splitlines()
    assert header.split() == ["time", "tool", "status", "session", "agent", "entry", "ms", "title"]
    assert len(rows) == 2
    assert "read the brief" in rows[0]
    assert rows[0].split()[2:4] == ["fs.read", "ok"]
    assert footer == "page 1 of 1, 2 calls"

    as_json = cli("log", "--status", "error", "--json")
    page = json.loads(as_json.stdout)
    assert page["meta"] == {"page": 1, "limit": 50, "total": 1, "pages": 1}
    assert (page["items"][0]["tool"], page["items"][0]["entryID"]) == ("bash", "e1")

    filtered = cli("log", "--session", "s2", "--order", "desc", "--limit", "1", "--json")
    assert [c["sessionID"] for c in json.loads(filtered.stdout)["items"]] == ["s2"]
    later = cli("log", "--from", "2999-01-01T00:00", "--json")
    assert json.loads(later.stdout)["items"] == []
    empty = cli("log", "--tool", "nothing")
    assert empty.stdout.splitlines() == ["no tool calls", "page 1 of 0, 0 calls"]


# questions


def ask(client: Client, *items: QuestionItem, session: str = "s1") -> str:
    return client.questions_raise(session, list(items), ToolRef("m1", "c1")).question.id


FRAMEWORK = QuestionItem(
    question="Which test framework?",
    header="Tests",
    options=[QuestionOption("pytest", "what the repo uses"), QuestionOption("unittest")],
)
LANGUAGES = QuestionItem(
    question="Which languages?",
    header="Languages",
    options=[QuestionOption("python"), QuestionOption("go"), QuestionOption("rust")],
    multiple=True,
    custom=True,
)


def answers_of(client: Client, question_id: str) -> list[list[str]]:
    for event in client.get_debug_dump()["events"]:
        if event["type"] == "question.answered" and event["payload"]["id"] == question_id:
            answers: list[list[str]] = event["payload"]["answers"]
            return answers
    raise AssertionError(f"{question_id} was not answered")


def test_questions_are_listed_with_numbered_options(cli: Cli, client: Client) -> None:
    qid = ask(client, FRAMEWORK)
    listed = cli("questions")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        f"{qid}  from s1",
        "  Tests: Which test framework?",
        "    1) pytest - what the repo uses",
        "    2) unittest",
    ]
    assert [q["id"] for q in json.loads(cli("questions", "--json").stdout)["questions"]] == [qid]
    client.questions_reject(qid)
    assert cli("questions").stdout == "no pending questions\n"


def test_a_question_is_answered_interactively_by_number(cli: Cli, client: Client) -> None:
    qid = ask(client, FRAMEWORK, LANGUAGES)
    # Not an option first (asked again), then picks; the second question takes several.
    done = cli("questions", "answer", qid, input="7\n2\n1, 3\n")
    assert done.returncode == 0, done.stderr
    assert "Question 1 of 2: Tests" in done.stdout
    assert "  2) unittest" in done.stdout
    assert done.stdout.rstrip().endswith(f"answered {qid}")
    assert "not an option" in done.stderr
    assert answers_of(client, qid) == [["unittest"], ["python", "rust"]]

    custom = ask(client, LANGUAGES)
    done = cli("questions", "answer", custom, input="zig\n")
    assert done.returncode == 0, done.stderr
    assert answers_of(client, custom) == [["zig"]]


def test_a_question_is_answered_with_flags(cli: Cli, client: Client) -> None:
    one = ask(client, LANGUAGES)
    done = cli("questions", "answer", one, "--answer", "go", "--answer", "rust", "--json")
    assert (done.returncode, json.loads(done.stdout)) == (0, {"answered": True})
    assert answers_of(client, one) == [["go", "rust"]]

    two = ask(client, FRAMEWORK, LANGUAGES)
    mismatch = cli("questions", "answer", two, "--answer", "pytest")
    assert mismatch.returncode == 2
    assert "--answer once per question" in one_line_error(mismatch)
    done = cli("questions", "answer", two, "--answers", '[["pytest"], ["go", "python"]]')
    assert done.returncode == 0, done.stderr
    assert answers_of(client, two) == [["pytest"], ["go", "python"]]

    three = ask(client, FRAMEWORK)
    refused = cli("questions", "answer", three, "--answer", "nose")
    assert refused.returncode == 1
    assert one_line_error(refused).startswith("orchestrator: 400 INVALID_ANSWER: ")
    no_input = cli("questions", "answer", three)
    assert no_input.returncode == 2
    assert "no answer given" in one_line_error(no_input)
    rejected = cli("questions", "reject", three, "--reason", "later")
    assert (rejected.returncode, rejected.stdout) == (0, f"rejected {three}\n")
    gone = cli("questions", "answer", three, "--answer", "pytest")
    assert gone.returncode == 1
    assert "404 QUESTION_NOT_FOUND" in one_line_error(gone)


# todo


def test_todo_shows_the_plan_as_a_tree(cli: Cli, client: Client) -> None:
    client.update_todo("Ship the thing")
    client.create_phase("Design", phase_id="phs_d", status="active")
    client.create_entries(
        [
            {"id": "e_api", "content": "Sketch the API", "phase_id": "phs_d"},
            {"id": "e_sub", "content": "Its errors", "phase_id": "phs_d"},
            {"id": "e_top", "content": "Design it all", "phase_id": "phs_d", "children": ["e_api"]},
            {"id": "e_do", "content": "Build it", "depends_on": ["e_api", "e_sub"]},
            {"id": "e_fix", "content": "Fix the leak", "priority": "critical"},
        ]
    )
    client.set_entry_status("e_sub", "cancelled")
    done = cli("todo")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("TODO todo_")
    assert lines[1] == "Ship the thing"
    assert lines[2:] == [
        "Phase Design (phs_d) [active]",
        "├── [-] cancelled e_sub  Its errors",
        "└── [ ] pending e_top  Design it all",
        "    └── [ ] pending e_api  Sketch the API",
        "No phase",
        "├── [ ] pending e_do  Build it",
        "│   after e_api (pending), e_sub (cancelled)",
        "└── [ ] pending critical e_fix  Fix the leak",  # a priority other than medium
    ]
    as_json = json.loads(cli("todo", "--json").stdout)
    assert [e["id"] for e in as_json["entries"]] == ["e_api", "e_sub", "e_top", "e_do", "e_fix"]
    assert [e["priority"] for e in as_json["entries"]][-2:] == ["medium", "critical"]
    assert as_json["project_context"] == "Ship the thing"


# dump, purge


def test_dump_to_stdout_and_to_a_file(cli: Cli, client: Client, tmp_path: Path) -> None:
    client.update_config({"a": 1})
    done = cli("dump")
    assert done.returncode == 0, done.stderr
    dump = json.loads(done.stdout)
    assert dump["config"] == {"a": 1}
    assert dump["events"][0]["type"] == "config.updated"
    target = tmp_path / "dump.json"
    written = cli("dump", "--output", str(target))
    assert (written.returncode, written.stdout) == (0, "")
    assert json.loads(target.read_text())["config"] == {"a": 1}
    assert f"to {target}" in written.stderr


def test_purge_asks_unless_told_yes(cli: Cli, client: Client) -> None:
    client.create_entries([{"content": "x"}])
    refused = cli("purge")  # stdin is not a terminal: no one to ask
    assert refused.returncode == 2
    assert "--yes" in one_line_error(refused)
    assert len(client.get_todo().entries) == 1
    done = cli("purge", "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("purged: todos, events")
    assert client.get_todo().entries == []
    as_json = json.loads(cli("purge", "--yes", "--json").stdout)
    assert "events" in as_json["purged"]


# export, import


def test_export_then_import_into_another_workspace(
    cli: Cli, client: Client, server: ServerProcess, tmp_path: Path
) -> None:
    client.create_entries([{"id": "e1", "content": "carry me"}, {"content": "and me"}])
    target = tmp_path / "todo.json"
    exported = cli("export", "--output", str(target))
    assert exported.returncode == 0, exported.stderr
    assert [e["content"] for e in json.loads(target.read_text())["entries"]] == [
        "carry me",
        "and me",
    ]
    markdown = cli("export", "--format", "markdown")
    assert "- [ ] carry me" in markdown.stdout

    elsewhere = Cli(server.base_url, f"{client.workspace}_b")
    imported = elsewhere("import", str(target))
    assert imported.returncode == 0, imported.stderr
    assert re.fullmatch(r"imported into todo_\w+ \(imp_\w+\)\n", imported.stdout)
    as_json = elsewhere("import", "-", "--json", input=markdown.stdout)
    job = json.loads(as_json.stdout)
    assert (job["status"], job["progress"]) == ("completed", 100)
    with Client(server.base_url, f"{client.workspace}_b") as other:
        assert [e.content for e in other.get_todo().entries][:2] == ["carry me", "and me"]

    started = elsewhere("import", str(target), "--no-wait", "--json")
    assert set(json.loads(started.stdout)) == {"importJobID", "todoID"}
    both = elsewhere("import", str(target), "--snapshot", "snap_x")
    assert both.returncode == 2
    assert "exactly one of" in one_line_error(both)
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    failed = elsewhere("import", str(tmp_path / "bad.json"))
    assert failed.returncode == 1
    assert one_line_error(failed).startswith("orchestrator: ")


def test_import_from_a_snapshot(cli: Cli, client: Client) -> None:
    client.create_entries([{"content": "kept in the vault"}])
    snapshot = client.sync_vault().snapshot.id
    client.purge()
    done = cli("import", "--snapshot", snapshot)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"imported into todo_\w+ \(imp_\w+\)\n", done.stdout)
    assert [e.content for e in client.get_todo().entries] == ["kept in the vault"]
    unknown = cli("import", "--snapshot", "snap_nope")
    assert unknown.returncode == 1
    assert "404" in one_line_error(unknown)


def test_import_from_a_repository(
    cli: Cli, make_server: Callable[..., ServerProcess], workspace: str, tmp_path: Path
) -> None:
    repo = git_repo(tmp_path / "plans", {"todo.json": json.dumps(PLAN)})
    allowed = make_server(ORCH_IMPORT_LOCAL_ROOTS=str(tmp_path))
    done = Cli(allowed.base_url, workspace)("import", "--repo", str(repo), "--path", "todo.json")
    assert done.returncode == 0, done.stderr  # it ended in KeyError: 'document' before
    assert done.stdout.startswith("imported into todo_")
    with Client(allowed.base_url, workspace) as client:
        assert [e.content for e in client.get_todo().entries] == ["from git"]


def test_a_refused_repository_is_one_line(cli: Cli, tmp_path: Path) -> None:
    """Whatever the server's policy refuses, the CLI reports in one line."""
    repo = git_repo(tmp_path / "plans", {"todo.json": json.dumps(PLAN)})
    for url in (str(repo), "ext::sh -c touch% /tmp/pwned"):
        refused = cli("import", "--repo", url)
        assert refused.returncode == 1, refused.stderr
        assert "Traceback" not in refused.stderr
        one_line_error(refused)


def test_import_without_a_source_is_a_usage_error(cli: Cli) -> None:
    done = cli("import")
    assert done.returncode == 2
    assert "exactly one of" in one_line_error(done)


# Exit codes


def test_exit_codes(cli: Cli, make_server: Callable[..., ServerProcess], workspace: str) -> None:
    missing = cli("todo", ORCH_WORKSPACE="")
    assert missing.returncode == 2
    assert "no workspace" in one_line_error(missing)
    usage = cli("tail", "--since", "x")
    assert usage.returncode == 2
    assert "tail: argument --since: " in one_line_error(usage)

    unreachable = cli("todo", ORCH_URL=f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 3
    assert "cannot reach http://127.0.0.1:" in one_line_error(unreachable)
    tail = cli("tail", ORCH_URL=f"http://127.0.0.1:{free_port()}")
    assert tail.returncode == 3  # fails at once rather than retrying forever

    bad_id = cli("todo", "--workspace", "not a workspace!")
    assert bad_id.returncode == 2  # checked before asking the server
    assert "invalid workspace id 'not a workspace!'" in one_line_error(bad_id)

    gated = make_server(ORCH_AUTH="required")
    refused = Cli(gated.base_url, workspace)("questions", "--token", "orch_nope")
    assert refused.returncode == 1
    assert "401 UNAUTHENTICATED" in one_line_error(refused)

    down = make_server(f"redis://127.0.0.1:{free_port()}")
    failing = Cli(down.base_url, workspace)("log")
    assert failing.returncode == 3
    assert "503 UNAVAILABLE" in one_line_error(failing)


def test_import_shows_a_progress_bar_on_a_terminal(
    cli: Cli, client: Client, server: ServerProcess, tmp_path: Path
) -> None:
    client.create_entries([{"content": "carry me"}])
    target = tmp_path / "todo.md"
    target.write_text(client.export_todo_markdown())
    main, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "orchestrator", "import", str(target)],
            cwd=ROOT,
            env={**cli.env, "ORCH_WORKSPACE": f"{client.workspace}_tty"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=30,
        )
        os.close(terminal)
        shown = b""
        while chunk := _read_pty(main):
            shown += chunk
    finally:
        os.close(main)
    assert done.returncode == 0
    assert done.stdout.startswith("imported into todo_")
    frames = [f.strip() for f in shown.decode().split("\r") if f.strip()]  # redrawn in place
    assert frames[-1] == "[##############################] 100% completed"
    assert all(f.startswith("[") and "%" in f for f in frames)


def _read_pty(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the other end is closed and everything was read
        return b""
