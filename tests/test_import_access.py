"""What a repository import may reach: https hosts on public addresses by default; local
repositories and other networks only where an operator allows them. A refused URL is 422
before anything is recorded or any connection is made; a URL is recorded as scheme, host,
port and path; git's own messages never reach a client."""

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis

from orchestrator.keys import WorkspaceKeys
from orchestrator.repo_access import RepoAccess, parse
from orchestrator.settings import Settings
from tests.servers import ServerProcess, free_port
from tests.test_import import HAND_WRITTEN, finished, git_repo, start


@pytest.fixture(scope="module")
def permissive(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[ServerProcess]:
    """A server whose operator allows local repositories under the test run's temporary
    directory, plain http, and the loopback network."""
    log = tmp_path_factory.mktemp("permissive") / "server.log"
    process = ServerProcess(
        redis_url,
        log,
        ORCH_IMPORT_LOCAL_ROOTS=str(tmp_path_factory.getbasetemp() / "allowed"),
        ORCH_IMPORT_PROTOCOLS="http:https",
        ORCH_IMPORT_ALLOW_NETWORKS="127.0.0.0/8,::1/128",
        ORCH_IMPORT_TIMEOUT_S="20",
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture
def allowed(tmp_path_factory: pytest.TempPathFactory, workspace: str) -> Path:
    """A directory under the permissive server's local root, of this test alone."""
    path = tmp_path_factory.getbasetemp() / "allowed" / workspace
    path.mkdir(parents=True)
    return path


@pytest.fixture
def lan(permissive: ServerProcess, workspace: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=permissive.workspace_url(workspace), timeout=10) as client:
        yield client


def refused(api: httpx.Client, url: str, code: str) -> str:
    """The message of a 422 refusal of ``url``, after checking nothing was recorded."""
    response = api.post("/import", json={"repoUrl": url})
    assert response.status_code == 422, (url, response.text)
    error = response.json()["error"]
    assert error["code"] == code, (url, error)
    assert error["details"] == {"path": "$.repoUrl"}
    assert api.get("/debug-dump").json()["log"]["last_seq"] == 0
    message: str = error["message"]
    return message


class Listener:
    """A loopback port that counts the connections made to it, answering each with
    ``reply`` (if any) and closing it."""

    def __init__(self, reply: bytes | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.reply = reply
        self.connections = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                if self.reply is not None:
                    conn.sendall(self.reply)

    def close(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()


# Refused by default


def test_local_repositories_are_refused_by_default(
    api: httpx.Client, tmp_path: Path, listener: Listener
) -> None:
    repo = git_repo(tmp_path / "secrepo", {"ops.md": "the root password is hunter2\n"})
    for url in (str(repo), f"file://{repo}", str(tmp_path / "missing")):
        message = refused(api, url, "REPO_PATH_REFUSED")
        assert "ORCH_IMPORT_LOCAL_ROOTS" in message
        assert str(tmp_path) not in message


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",  # a name that resolves to loopback
        "[::1]",
        "[::ffff:127.0.0.1]",
        "0.0.0.0",
        "0x7f.1",  # 127.0.0.1 as inet_aton reads it
        "2130706433",  # 127.0.0.1 as one number
        "10.1.2.3",
        "192.168.1.1",
        "169.254.169.254",  # a cloud's metadata service
        "[fe80::1]",
        "[fec0::1]",  # site-local
        "[2002:a00:1::]",  # 6to4 carrying 10.0.0.1
        "[2002:7f00:1::]",  # 6to4 carrying 127.0.0.1
        "[2001:0:a00:1::f5ff:fffe]",  # Teredo: server 10.0.0.1, client 10.0.0.1
        "224.0.0.1",
        "240.0.0.1",
        "no-such-host.invalid",  # said the same way: no oracle for internal names
    ],
)
def test_non_public_addresses_are_refused_without_a_connection(
    api: httpx.Client, listener: Listener, host: str
) -> None:
    message = refused(api, f"https://{host}:{listener.port}/r.git", "REPO_HOST_REFUSED")
    assert message == (
        "repoUrl's host does not resolve to a public address: imports reach public hosts "
        "only (an operator can allow other networks with ORCH_IMPORT_ALLOW_NETWORKS)"
    )
    assert listener.connections == 0


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://127.0.0.1:{port}/r.git", "REPO_SCHEME_REFUSED"),
        ("git://127.0.0.1:{port}/r.git", "REPO_SCHEME_REFUSED"),
        ("ssh://git@127.0.0.1:{port}/r.git", "REPO_SCHEME_REFUSED"),
        ("git@127.0.0.1:r.git", "REPO_SCHEME_REFUSED"),
        ("ext::nc 127.0.0.1 {port}", "REPO_URL_INVALID"),
        ("fd::3", "REPO_URL_INVALID"),
        ("https://127.0.0.1\\@example.com:{port}/", "REPO_URL_INVALID"),
        ("https://%31%32%37.0.0.1:{port}/", "REPO_URL_INVALID"),
    ],
)
def test_other_schemes_and_odd_urls_are_refused_without_a_connection(
    api: httpx.Client, listener: Listener, url: str, code: str
) -> None:
    refused(api, url.format(port=listener.port), code)
    assert listener.connections == 0


# Allowed by an operator


def test_a_local_repository_under_an_allowed_root_imports(lan: httpx.Client, allowed: Path) -> None:
    repo = git_repo(allowed / "repo", {"TODO.json": msgspec.json.encode(HAND_WRITTEN).decode()})
    job = finished(lan, start(lan, {"repoUrl": f"file://{repo}"})["importJobID"])
    assert job["status"] == "completed", job
    assert len(lan.get("/todo").json()["entries"]) == 3


def test_a_path_out_of_the_allowed_roots_is_refused_even_through_a_symlink(
    lan: httpx.Client, allowed: Path, tmp_path: Path
) -> None:
    outside = git_repo(tmp_path / "secrepo", {"TODO.md": "- [ ] the password is hunter2\n"})
    (allowed / "link").symlink_to(outside)
    climbing = f"{allowed}/{os.path.relpath(outside, allowed)}"
    for url in (str(outside), str(allowed / "link"), climbing):
        message = refused(lan, url, "REPO_PATH_REFUSED")
        assert str(outside) not in message


def test_a_file_that_is_no_todo_document_is_not_echoed(lan: httpx.Client, allowed: Path) -> None:
    config = {"db_password_key": "hunter2", "internal_host": "db.corp"}
    repo = git_repo(
        allowed / "repo",
        {"config.json": msgspec.json.encode(config).decode(), "ops.md": "hunter2 in prose\n"},
    )
    for path, why in (
        ("config.json", 'it has no "format": "orchestrator-todo"'),
        ("ops.md", "it has no checklist item (`- [ ] ...`) and no orchestrator-todo header"),
    ):
        job = finished(lan, start(lan, {"repoUrl": str(repo), "path": path})["importJobID"])
        assert job["status"] == "failed"
        assert job["error"] == f"{path} in {repo} is not a TODO document: {why}"
        assert job["problems"] == []
        dump = lan.get("/debug-dump").text
        for secret in ("hunter2", "db_password_key", "internal_host", "db.corp"):
            assert secret not in dump
    assert lan.get("/vault/export").json() == {"format": "orchestrator-todo", "schema_version": 2}


def test_a_closed_port_and_a_port_answering_garbage_fail_alike(
    lan: httpx.Client, permissive: ServerProcess
) -> None:
    garbage = Listener(reply=b"SSH-2.0-OpenSSH_9.0 not http at all\r\n\r\n")
    try:
        errors = []
        for port in (free_port(), garbage.port):
            url = f"http://127.0.0.1:{port}/r.git"
            job = finished(lan, start(lan, {"repoUrl": url})["importJobID"])
            assert job["status"] == "failed"
            assert job["problems"] == []
            errors.append(job["error"].replace(url, "<url>"))
        assert garbage.connections >= 1  # the operator allowed it, so git did connect
    finally:
        garbage.close()
    assert (
        errors[0]
        == errors[1]
        == (
            "could not clone <url>: check the URL, and that the repository is reachable from the "
            "server and readable without a password prompt"
        )
    )


# What is recorded


def workspace_values(redis_url: str, workspace: str) -> list[str]:
    """Everything stored under the workspace's keys, as text."""
    readers: dict[str, Any] = {
        "string": lambda client, key: client.get(key),
        "hash": lambda client, key: client.hgetall(key),
        "stream": lambda client, key: client.xrange(key),
        "zset": lambda client, key: client.zrange(key, 0, -1),
        "set": lambda client, key: client.smembers(key),
        "list": lambda client, key: client.lrange(key, 0, -1),
    }
    with redis.Redis.from_url(redis_url) as client:
        keys = list(client.scan_iter(match=f"{WorkspaceKeys(workspace).prefix}*"))
        assert keys
        return [repr(readers[client.type(k).decode()](client, k)) for k in keys]


def test_a_repository_url_is_recorded_without_credentials_query_or_fragment(
    lan: httpx.Client, permissive: ServerProcess, redis_url: str, workspace: str
) -> None:
    port = free_port()
    url = f"http://alice:s3cret@127.0.0.1:{port}/r.git?access_token=SECRET123#frag"
    job = finished(lan, start(lan, {"repoUrl": url})["importJobID"])
    assert job["status"] == "failed"
    assert job["source"]["repoUrl"] == f"http://127.0.0.1:{port}/r.git"
    with redis.Redis.from_url(redis_url) as client:
        stream = repr(client.xrange(WorkspaceKeys(workspace).events))
    assert "import.failed" in stream
    stored = "\n".join(workspace_values(redis_url, workspace))
    for text in (repr(job), job["error"], stream, stored, permissive.log_path.read_text()):
        for secret in ("SECRET123", "s3cret", "alice", "frag"):
            assert secret not in text


# The rules, without a server


@pytest.mark.anyio
async def test_git_is_pinned_to_the_addresses_checked() -> None:
    # A name checked against one answer must not be connected to by another (DNS
    # rebinding), nor a redirect followed to a host nobody checked.
    access = RepoAccess(
        Settings(import_protocols="https:ssh", import_allow_networks="127.0.0.0/8,::1/128")
    )
    target = await access.check(parse("https://user:pw@localhost:8443/r.git?x=1"))
    assert target.url == "https://user:pw@localhost:8443/r.git?x=1"
    assert target.shown == "https://localhost:8443/r.git"
    assert target.protocols == "https:ssh"
    pin, redirects = target.config
    assert pin.startswith("http.curloptResolve=localhost:8443:127.0.0.1")
    assert set(pin.rpartition(":8443:")[2].split(",")) <= {"127.0.0.1", "[::1]"}
    assert redirects == "http.followRedirects=false"
    ssh = await access.check(parse("git@127.0.0.1:team/r.git"))
    assert (ssh.shown, ssh.config) == ("127.0.0.1:team/r.git", ())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ORCH_IMPORT_PROTOCOLS", "https:ext"),
        ("ORCH_IMPORT_LOCAL_ROOTS", "relative/dir"),
        ("ORCH_IMPORT_ALLOW_NETWORKS", "10.0.0.0/8,intranet"),
        ("ORCH_IMPORT_MAX_CONCURRENT", "0"),
    ],
)
def test_import_settings_are_checked_at_start(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}="):
        Settings.from_env({name: value})
