"""Bearer tokens: the CLI that manages them, and the gate in front of every workspace route.

Tokens are global (not per workspace), and a server requires them once one exists: these
tests run on a Redis of their own, so the rest of the suite keeps serving without tokens.
"""

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from orchestrator.redis_server import RedisServer
from tests.servers import ROOT, ServerProcess, free_port
from tests.sse_client import open_stream


@pytest.fixture(scope="module")
def auth_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("auth-redis"), appendonly=False)
    server.start()
    yield server.url
    server.stop()


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=ROOT,
        env={"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def create(redis_url: str, *scope: str) -> dict[str, str]:
    done = cli(redis_url, "token", "create", *scope, "--name", "test", "--json")
    assert done.returncode == 0, done.stderr
    made: dict[str, str] = json.loads(done.stdout)
    return made


@pytest.fixture(scope="module")
def tokens(auth_redis: str) -> dict[str, dict[str, str]]:
    return {
        "a": create(auth_redis, "--workspace", "ws_a"),
        "b": create(auth_redis, "--workspace", "ws_b"),
        "admin": create(auth_redis, "--admin"),
    }


@pytest.fixture
def gated(
    make_server: Callable[..., ServerProcess], auth_redis: str, tokens: dict[str, dict[str, str]]
) -> ServerProcess:
    return make_server(auth_redis, ORCH_AUTH_CACHE_S="0.2", ORCH_MAX_STREAMS_PER_TOKEN="2")


def bearer(token: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['token']}"}


def test_token_cli_creates_lists_and_revokes(auth_redis: str) -> None:
    made = create(auth_redis, "--workspace", "ws_cli")
    assert made["token"].startswith("orch_")
    assert made["scope"] == "workspace"
    listed = json.loads(cli(auth_redis, "token", "list", "--json").stdout)
    mine = next(t for t in listed if t["id"] == made["id"])
    assert mine == {k: v for k, v in made.items() if k != "token"}  # never the secret
    assert "token" not in json.dumps(listed)

    revoked = cli(auth_redis, "token", "revoke", made["id"])
    assert revoked.returncode == 0
    assert made["id"] in revoked.stdout
    again = cli(auth_redis, "token", "revoke", made["id"])
    assert again.returncode == 1
    assert again.stderr.strip() == f"orchestrator: no token {made['id']}"
    missing_scope = cli(auth_redis, "token", "create")
    assert missing_scope.returncode == 2
    assert "--workspace" in missing_scope.stderr


def test_requests_without_a_valid_token_are_401(
    gated: ServerProcess, tokens: dict[str, dict[str, str]]
) -> None:
    url = gated.workspace_url("ws_a") + "/config"
    for headers in ({}, {"Authorization": "Bearer orch_nope"}, {"Authorization": "Basic x"}):
        response = httpx.get(url, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "UNAUTHENTICATED"
        assert response.headers["www-authenticate"].startswith("Bearer")
    # The probes stay open: a load balancer checks them without a token.
    assert httpx.get(gated.base_url + "/healthz").status_code == 200


def test_a_token_reaches_its_workspace_only_and_admin_reaches_all(
    gated: ServerProcess, tokens: dict[str, dict[str, str]]
) -> None:
    a_url, b_url = gated.workspace_url("ws_a"), gated.workspace_url("ws_b")
    written = httpx.patch(a_url + "/config", json={"owner": "a"}, headers=bearer(tokens["a"]))
    assert written.status_code == 200
    httpx.patch(b_url + "/config", json={"owner": "b"}, headers=bearer(tokens["b"]))

    denied = httpx.get(b_url + "/config", headers=bearer(tokens["a"]))
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "WORKSPACE_FORBIDDEN"
    assert "owner" not in denied.text
    write = httpx.patch(b_url + "/config", json={"owner": "a"}, headers=bearer(tokens["a"]))
    assert write.status_code == 403
    assert httpx.get(b_url + "/config", headers=bearer(tokens["b"])).json() == {"owner": "b"}
    for ws, owner in (("ws_a", "a"), ("ws_b", "b")):
        admin = httpx.get(gated.workspace_url(ws) + "/config", headers=bearer(tokens["admin"]))
        assert admin.json() == {"owner": owner}


def test_streams_are_gated_and_bounded_per_token(
    gated: ServerProcess, tokens: dict[str, dict[str, str]]
) -> None:
    events = gated.workspace_url("ws_a") + "/events"
    assert httpx.get(events, headers=bearer(tokens["b"])).status_code == 403
    assert httpx.get(events).status_code == 401
    with httpx.Client(timeout=10, headers=bearer(tokens["a"])) as client:
        with open_stream(client, events), open_stream(client, events):
            third = client.get(events)
            assert third.status_code == 429
            assert third.json()["error"]["code"] == "TOO_MANY_STREAMS"
            assert third.headers["retry-after"] == "1"
        admin = httpx.Client(timeout=10, headers=bearer(tokens["admin"]))
        with admin, open_stream(admin, events):  # another token has its own allowance
            pass
        # Closed streams give their slots back.
        deadline = time.monotonic() + 5
        while True:
            with client.stream("GET", events) as response:
                if response.status_code == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_revoked_token_stops_working(gated: ServerProcess, auth_redis: str) -> None:
    made = create(auth_redis, "--workspace", "ws_r")
    url = gated.workspace_url("ws_r") + "/config"
    assert httpx.get(url, headers=bearer(made)).status_code == 200
    assert cli(auth_redis, "token", "revoke", made["id"]).returncode == 0
    deadline = time.monotonic() + 5  # the lookup cache is 0.2 s here
    while httpx.get(url, headers=bearer(made)).status_code != 401:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_serving_a_network_without_tokens_needs_insecure(tmp_path: Path) -> None:
    empty = RedisServer(tmp_path / "redis", appendonly=False)
    empty.start()
    try:
        port = str(free_port())
        command = [sys.executable, "-m", "orchestrator", "serve", "--host", "0.0.0.0"]
        env = {"REDIS_URL": empty.url, "PATH": "/usr/bin:/bin"}
        refused = subprocess.run(
            [*command, "--port", port],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert refused.returncode == 2
        assert "refusing to serve 0.0.0.0 without authentication" in refused.stderr
        assert "--insecure" in refused.stderr

        with (tmp_path / "insecure.log").open("wb") as log:
            insecure = subprocess.Popen(
                [*command, "--port", port, "--insecure"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
            )
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    up = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    assert up.status_code == 200
                    break
                except httpx.TransportError:
                    assert insecure.poll() is None
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
        finally:
            insecure.terminate()
            insecure.wait(timeout=15)
        assert "auth.optional" in (tmp_path / "insecure.log").read_text()

        loopback = ServerProcess(empty.url, tmp_path / "loopback.log")
        loopback.start()
        try:
            assert httpx.get(loopback.workspace_url("ws_x") + "/config").json() == {}
        finally:
            loopback.stop()
    finally:
        empty.stop()


def test_questions_per_session_are_bounded(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(ORCH_MAX_QUESTIONS_PER_SESSION="2")
    url = server.workspace_url("ws_q") + "/questions"
    body = {
        "sessionID": "chatty",
        "questions": [{"question": "?", "header": "h", "options": [{"label": "a"}]}],
        "tool": {"messageID": "m", "callID": "c"},
    }
    first = httpx.post(url, json=body, headers={"Idempotency-Key": "q1"})
    assert httpx.post(url, json=body).status_code == 201
    over = httpx.post(url, json=body)
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "TOO_MANY_QUESTIONS"
    # A retry of an earlier request still gets its first answer.
    retry = httpx.post(url, json=body, headers={"Idempotency-Key": "q1"})
    assert retry.status_code == 201
    assert retry.json() == first.json()
    assert httpx.post(url, json={**body, "sessionID": "quiet"}).status_code == 201
    assert len(httpx.get(url).json()["questions"]) == 3


@pytest.mark.parametrize("value", ["maybe", "require", "Required", " auto"])
def test_an_unknown_auth_mode_stops_the_server(value: str, tmp_path: Path) -> None:
    # A typo must not leave open a server its operator meant to close: `serve` exits before
    # it binds, naming the variable and the values it takes.
    refused = subprocess.run(
        [sys.executable, "-m", "orchestrator", "serve", "--port", str(free_port())],
        cwd=ROOT,
        # Were it to start after all, its local Redis would be a throwaway one, never the
        # `make run` Redis of the checkout (port 6390, ./data).
        env={
            "ORCH_AUTH": value,
            "PATH": "/usr/bin:/bin",
            "ORCH_DATA_DIR": str(tmp_path / "data"),
            "ORCH_EMBEDDED_REDIS_PORT": str(free_port()),
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    message = refused.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert message == f"orchestrator: ORCH_AUTH={value!r}: expected one of auto, required"
