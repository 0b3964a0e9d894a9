"""The README's first example does what its comments say, run against a real server.

The "Try it" block is read from README.md itself, so the example a new user copies cannot
drift from what the server does.
"""

import re
import shlex

import httpx

from orchestrator.settings import Settings
from tests.servers import ROOT, ServerProcess

README = (ROOT / "README.md").read_text()


def try_it_block() -> list[str]:
    """The lines of the indented block that follows "Try it:"."""
    after = README.split("Try it:\n\n", 1)[1]
    lines = []
    for line in after.splitlines():
        if not line.startswith("    "):
            break
        lines.append(line.strip())
    return lines


def curl_requests(lines: list[str], base: str) -> list[tuple[str, str, str | None, str]]:
    """(method, url, body, comment) of each plain `curl` line (the live-feed one excepted)."""
    found = []
    for line in lines:
        command, _, comment = line.partition("#")
        words = shlex.split(command.replace("$W", base))
        if not words or words[0] != "curl" or "-N" in words:
            continue
        method = words[words.index("-X") + 1] if "-X" in words else "GET"
        body = words[words.index("-d") + 1] if "-d" in words else None
        url = next(w for w in words[1:] if w.startswith("http"))
        found.append((method, url, body, comment.strip()))
    return found


def test_every_request_of_the_first_example_succeeds_and_does_what_it_says(
    server: ServerProcess, workspace: str
) -> None:
    base = server.workspace_url(workspace)
    requests = curl_requests(try_it_block(), base)
    assert {method for method, *_ in requests} >= {"GET", "POST", "PATCH"}
    with httpx.Client(timeout=10) as http:
        for method, url, body, _ in requests:
            answer = http.request(method, url, content=body)
            assert answer.is_success, (method, url, answer.text)
        budget = http.get(f"{base}/budget").json()["budget"]
    # The line that says it sets worker slots sets them, away from the default of 4.
    slots = next(b for m, u, b, c in requests if "worker slots" in c and b is not None)
    wanted = re.search(r'"max_workers":\s*(\d+)', slots)
    assert wanted is not None
    assert int(wanted.group(1)) != Settings().default_workers
    assert budget["usage"]["max_workers"] == int(wanted.group(1))


def test_every_redis_cli_line_names_the_embedded_redis_port() -> None:
    port = Settings().embedded_redis_port
    lines = [line for line in README.splitlines() if line.strip().startswith("redis-cli")]
    assert lines
    for line in lines:
        assert f"-p {port}" in line, line
