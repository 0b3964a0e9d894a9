"""Dispatchers walk the started workspaces, and stop walking the ones that went idle."""

import time
from collections.abc import Callable

import httpx
import redis

from orchestrator.keys import EXECUTORS
from tests.servers import ServerProcess


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_an_idle_workspace_is_retired_and_a_start_brings_it_back(
    server: ServerProcess, workspace: str, redis_url: str
) -> None:
    with (
        redis.Redis.from_url(redis_url) as client,
        httpx.Client(base_url=server.workspace_url(workspace), timeout=10) as api,
    ):

        def walked() -> bool:
            return bool(client.sismember(EXECUTORS, workspace))

        def status() -> str:
            entry: dict[str, str] = api.get("/todo/entries/a").json()["entry"]
            return entry["status"]

        api.post("/todo/entries", json={"entries": [{"id": "a", "content": "a"}]})
        assert api.post("/executor/start").status_code == 200
        assert walked()
        until(lambda: status() == "dispatched", "the started executor dispatches")
        claimed = api.post("/executor/claim", json={"sessionID": "w"})
        assert claimed.json()["entry"]["id"] == "a"

        # Stopped with nothing handed out: nothing to expire or dispatch, so it is retired.
        assert api.post("/executor/stop-all").status_code == 200
        until(lambda: not walked(), "an idle workspace is retired")
        assert api.get("/executor/status").json()["executor"]["dispatcher"] is None

        # Started again: walked again, and it dispatches.
        assert api.post("/executor/start").status_code == 200
        assert walked()
        until(lambda: status() == "dispatched", "the restarted executor dispatches")
