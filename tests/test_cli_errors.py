"""Every ``orchestrator`` subcommand given bad input, through the real entry point: the error
is one line on stderr, never a traceback, and the exit code is the documented one."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator_sdk import cli as sdk_cli
from tests.servers import ROOT, ServerProcess, free_port

OK, REFUSED, USAGE, UNAVAILABLE, INTERNAL = 0, 1, 2, 3, 70
DEAD_URL = "http://127.0.0.1:9"  # discard port: nothing listens on loopback


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "REDIS_URL"))}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=ROOT,
        env={**base, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=45,
    )


def error_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith("orchestrator: "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    return done.stderr


# Commands that talk to Redis themselves, and the command line as a whole

LOCAL = [
    (("rebuild", "bad ws!"), USAGE, "invalid workspace id 'bad ws!'"),
    (("rebuild", "ws_1", "--projection", "nope"), USAGE, "argument --projection"),
    (("token", "create", "--workspace", "bad ws!"), USAGE, "invalid workspace id 'bad ws!'"),
    (("token", "create"), USAGE, "one of the arguments --workspace --admin is required"),
    (("token", "revoke", "tok_nope"), REFUSED, "no token tok_nope"),
    (("token",), USAGE, "required: action"),
    (("serve", "--port", "http"), USAGE, "argument --port"),
    (("demo", "--speed", "0"), USAGE, "argument --speed"),
    (("demo", "--workspace", "bad ws!"), USAGE, "invalid workspace id"),
    (("demo", "--url", DEAD_URL, "--workspace", "ws_1"), UNAVAILABLE, "cannot reach"),
    ((), USAGE, "required: command"),
    (("nope",), USAGE, "invalid choice: 'nope'"),
]


@pytest.mark.parametrize(("args", "code", "says"), LOCAL, ids=lambda v: repr(v))
def test_local_commands(args: tuple[str, ...], code: int, says: str, redis_url: str) -> None:
    assert says in error_line(run(*args, REDIS_URL=redis_url), code)


@pytest.mark.parametrize(
    "args", [("rebuild", "ws_1"), ("token", "list"), ("token", "create", "--admin")]
)
def test_redis_unreachable_is_one_line(args: tuple[str, ...]) -> None:
    line = error_line(run(*args, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"), UNAVAILABLE)
    assert line.startswith("orchestrator: Redis: ")


def test_a_bad_setting_is_one_line(redis_url: str) -> None:
    line = error_line(run("token", "list", REDIS_URL=redis_url, ORCH_MAX_BATCH="many"), USAGE)
    assert "ORCH_MAX_BATCH='many': expected int" in line


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("ORCH_HEADER_TIMEOUT_S", "0", "ORCH_HEADER_TIMEOUT_S=0.0: expected a number above 0"),
        ("ORCH_REPLAY_BATCH", "-5", "ORCH_REPLAY_BATCH=-5: expected a number above 0"),
        ("ORCH_EVENT_RETENTION", "-1", "ORCH_EVENT_RETENTION=-1: expected 0 or more"),
        ("ORCH_HEADER_TIMEOUT_S", "nan", "ORCH_HEADER_TIMEOUT_S=nan: expected a number above 0"),
        ("ORCH_HEARTBEAT_S", "inf", "ORCH_HEARTBEAT_S=inf: expected a number above 0"),
        ("ORCH_EMBEDDED_REDIS_PORT", "70000", "ORCH_EMBEDDED_REDIS_PORT=70000: expected a port"),
    ],
)
def test_a_count_or_duration_that_cannot_work_is_refused(
    variable: str, value: str, says: str, redis_url: str
) -> None:
    line = error_line(run("serve", REDIS_URL=redis_url, **{variable: value}), USAGE)
    assert says in line


def test_serve_on_a_taken_port_ends_with_one_line_and_exit_3(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("serve", "--port", str(port), REDIS_URL=redis_url)
    assert "Traceback" not in done.stderr
    assert done.returncode == UNAVAILABLE
    # serve logs as it starts; the error is its last line
    last = done.stderr.strip().splitlines()[-1]
    assert last == f"orchestrator: could not serve http://127.0.0.1:{port} (the log above says why)"


# The client commands, against a live server


def client_cases(tmp: Path) -> list[tuple[tuple[str, ...], int, str]]:
    return [
        (("tail", "--since", "x"), USAGE, "argument --since"),
        (("tail", "--url", DEAD_URL), UNAVAILABLE, "cannot reach"),
        (("log", "--from", "yesterday"), USAGE, "argument --from"),
        (("log", "--order", "sideways"), USAGE, "argument --order"),
        (("log", "--limit", "0"), REFUSED, "400"),
        (("questions", "reject", "que_nope"), REFUSED, "404"),
        (("questions", "answer", "que_nope"), REFUSED, "404"),
        (("todo", "--workspace", "bad ws!"), USAGE, "invalid workspace id"),
        (("todo", "--timeout", "-1"), USAGE, "argument --timeout"),
        (("todo", "--url", "ftp://example"), UNAVAILABLE, "unsupported protocol"),
        (("dump", "--output", str(tmp / "missing" / "dump.json")), USAGE, "cannot write"),
        (("purge",), USAGE, "pass --yes"),
        (("export", "--format", "markdown", "--json"), USAGE, "choose one"),
        (("export", "--format", "xml"), USAGE, "argument --format"),
        (("import",), USAGE, "exactly one of"),
        (("import", str(tmp / "missing.json")), USAGE, "cannot read"),
        (("import", "--snapshot", "snap_nope"), REFUSED, "404"),
    ]


CLIENT_IDS = [" ".join(c[0]).replace("/", "_")[:40] for c in client_cases(Path("t"))]


@pytest.mark.parametrize("case", range(len(CLIENT_IDS)), ids=CLIENT_IDS)
def test_client_commands(case: int, server: ServerProcess, workspace: str, tmp_path: Path) -> None:
    args, code, says = client_cases(tmp_path)[case]
    done = run(*args, ORCH_URL=server.base_url, ORCH_WORKSPACE=workspace)
    assert says in error_line(done, code)


def test_no_workspace_is_one_line(server: ServerProcess) -> None:
    assert "no workspace" in error_line(run("todo", ORCH_URL=server.base_url), USAGE)


# The codes are documented where a user looks


def test_help_documents_every_exit_code() -> None:
    done = run("--help")
    assert done.returncode == OK
    documented = re.findall(r"^  (\d+) ", done.stdout.split("exit codes", 1)[1], re.M)
    assert [int(c) for c in documented] == [OK, REFUSED, USAGE, UNAVAILABLE, INTERNAL, 130]


def test_a_bug_is_one_line_with_its_own_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert sdk_cli.unexpected(KeyError("document")) == INTERNAL
    err = capsys.readouterr().err
    assert err == "orchestrator: unexpected KeyError: 'document' (a bug: please report it)\n"
