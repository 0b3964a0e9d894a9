from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.servers import ServerProcess, free_port

CALL = {"tool": "fs.read", "sessionID": "s1", "agentName": "a", "status": "ok"}
QUESTION = {
    "sessionID": "s1",
    "questions": [{"question": "Go?", "header": "Go", "options": [{"label": "Yes"}]}],
    "tool": {"messageID": "m", "callID": "c"},
}


def test_purge_clears_everything_but_config_and_seq_goes_on(api: httpx.Client) -> None:
    api.patch("/config", json={"keep": True})
    api.post("/log", json={"items": [CALL, CALL]})
    api.post("/questions", json=QUESTION)

    response = api.post("/purge")
    assert response.status_code == 200
    assert response.json() == {
        "purged": ["todos", "events", "budgets", "tool_logs", "session_ids", "caches"]
    }

    assert api.get("/config").json() == {"keep": True}
    assert api.get("/log").json() == {
        "items": [],
        "meta": {"page": 1, "limit": 50, "total": 0, "pages": 0},
    }
    assert api.get("/questions").json() == {"questions": []}
    dump = api.get("/debug-dump").json()
    assert dump["events"] == [
        {
            "seq": 5,
            "type": "orchestration.purged",
            "payload": {**response.json(), "config": {"keep": True}},
        }
    ]
    assert dump["sessions"] == []
    assert dump["log"]["first_seq"] == dump["log"]["last_seq"] == 5

    created = api.post("/log", json=CALL).json()
    assert created["items"][0]["seq"] == 6


def test_debug_dump_has_every_section(api: httpx.Client, workspace: str) -> None:
    api.patch("/config", json={"a": 1})
    api.post("/log", json=CALL)
    question = api.post("/questions", json=QUESTION).json()["question"]

    response = api.get("/debug-dump")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    dump = response.json()
    assert dump["workspaceID"] == workspace
    assert dump["config"] == {"a": 1}
    assert dump["log"] == {"first_seq": 1, "last_seq": 3, "stream": f"orch:{{{workspace}}}:events"}
    assert dump["projections"] == {
        "config": 3,
        "log": 3,
        "questions": 3,
        "sessions": 3,
        "plan": 3,
        "imports": 3,
    }
    assert dump["versions"] == {"config": 1, question["id"]: 3}
    assert dump["sessions"] == ["s1"]
    assert dump["questions"] == [question]
    assert [e["seq"] for e in dump["events"]] == [1, 2, 3]
    assert [c["tool"] for c in dump["tool_logs"]] == ["fs.read"]
    assert dump["caches"]["replica"].startswith("rep_")
    assert dump["todo"]["entries"] == []
    assert dump["phases"] == []
    assert dump["executor"]["status"] == "stopped"
    assert dump["budgets"]["tool_calls"] == 1
    assert dump["leases"] == dump["locks"] == []


def test_debug_dump_streams_large_logs(api: httpx.Client) -> None:
    for _ in range(3):
        assert api.post("/log", json={"items": [CALL] * 1000}).status_code == 201
    with api.stream("GET", "/debug-dump") as response:
        chunks = list(response.iter_raw())
    assert len(chunks) > 3  # written section by section, not as one body
    dump = httpx.Response(200, content=b"".join(chunks)).json()
    assert len(dump["events"]) == len(dump["tool_logs"]) == 3000


def test_events_connections_starts_at_zero(api: httpx.Client) -> None:
    assert api.get("/events/connections").json() == {"count": 0}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/workspaces/bad.id/orchestration/config"),
        ("GET", "/api/v1/workspaces/" + "x" * 65 + "/orchestration/log"),
        ("POST", "/api/v1/workspaces/ws%7Bx%7D/orchestration/log"),
        ("GET", "/api/v1/workspaces/ws_1/orchestration/questions/que.1"),
    ],
)
def test_ids_are_checked_before_they_reach_redis(
    server: ServerProcess, method: str, path: str
) -> None:
    response = httpx.request(method, server.base_url + path, json=CALL)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_ID"


def test_bodies_over_one_mebibyte_are_413(api: httpx.Client) -> None:
    big = {**CALL, "title": "x" * (1024 * 1024)}
    response = api.post("/log", json=big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert api.get("/log").json()["meta"]["total"] == 0


def test_unknown_routes_and_methods_are_json(server: ServerProcess) -> None:
    missing = httpx.get(server.base_url + "/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"
    wrong = httpx.delete(server.workspace_url("ws_1") + "/config")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_health_and_readiness(server: ServerProcess) -> None:
    assert httpx.get(server.base_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.base_url + "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "redis": "ok", "lagging": {}}


def test_readiness_fails_without_redis(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(redis=f"redis://127.0.0.1:{free_port()}/0")
    assert httpx.get(server.base_url + "/healthz").status_code == 200
    ready = httpx.get(server.base_url + "/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    write = httpx.post(server.workspace_url("ws_1") + "/log", json=CALL)
    assert write.status_code == 503
    assert write.headers["retry-after"] == "1"
    assert write.json()["error"]["code"] == "UNAVAILABLE"


def test_serve_without_redis_url_starts_a_local_redis_that_keeps_data(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    env = {"ORCH_DATA_DIR": str(tmp_path / "data"), "ORCH_EMBEDDED_REDIS_PORT": str(free_port())}
    first = make_server(redis=None, **env)
    url = first.workspace_url("ws_local")
    assert httpx.patch(url + "/config", json={"kept": "across restarts"}).status_code == 200
    first.stop()
    assert (tmp_path / "data" / "redis").is_dir()

    second = make_server(redis=None, **env)
    assert httpx.get(second.workspace_url("ws_local") + "/config").json() == {
        "kept": "across restarts"
    }


def test_config_survives_purge_and_rebuild(api: httpx.Client, workspace: str) -> None:
    api.patch("/config", json={"a": 1})
    api.post("/purge")
    assert api.patch("/config", json={"b": 2}).json() == {"a": 1, "b": 2}
    api.post("/purge")
    assert api.get("/config").json() == {"a": 1, "b": 2}


def test_purging_a_workspace_without_config_leaves_it_patchable(api: httpx.Client) -> None:
    api.post("/purge")
    (event,) = api.get("/debug-dump").json()["events"]
    assert "config" not in event["payload"]
    assert api.patch("/config", json={"a": 1}).json() == {"a": 1}
