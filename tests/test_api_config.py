import json
import threading
from collections.abc import Callable

import httpx

from tests.servers import ServerProcess


def test_config_is_empty_until_set(api: httpx.Client) -> None:
    response = api.get("/config")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}


def test_patch_merges_deeply_and_null_deletes(api: httpx.Client) -> None:
    first = api.patch("/config", json={"executor": {"max_workers": 4, "mode": "auto"}, "x": 1})
    assert first.status_code == 200
    assert first.json() == {"executor": {"max_workers": 4, "mode": "auto"}, "x": 1}

    second = api.patch("/config", json={"executor": {"mode": None, "poll_ms": 50}, "x": None})
    assert second.json() == {"executor": {"max_workers": 4, "poll_ms": 50}}
    assert api.get("/config").json() == {"executor": {"max_workers": 4, "poll_ms": 50}}


def test_patch_emits_config_updated_with_the_patch_alone(api: httpx.Client) -> None:
    api.patch("/config", json={"a": {"b": 1}, "c": 2})
    api.patch("/config", json={"a": {"d": 3}, "c": None})
    events = api.get("/debug-dump").json()["events"]
    assert events == [
        {"seq": 1, "type": "config.updated", "payload": {"patch": {"a": {"b": 1}, "c": 2}}},
        {"seq": 2, "type": "config.updated", "payload": {"patch": {"a": {"d": 3}, "c": None}}},
    ]
    assert api.get("/config").json() == {"a": {"b": 1, "d": 3}}


def test_the_log_grows_with_the_patches_not_with_the_config(api: httpx.Client) -> None:
    # Each event used to carry the whole merged config: 20 patches of 5 KB recorded
    # 5 + 10 + ... + 100 KB (1 MB), where the patches themselves are 100 KB.
    for n in range(20):
        assert api.patch("/config", json={f"k{n}": "x" * 5000}).status_code == 200
    events = api.get("/debug-dump").json()["events"]
    recorded = sum(len(json.dumps(e["payload"])) for e in events)
    assert len(events) == 20
    assert recorded < 20 * 5100
    assert len(api.get("/config").content) > 20 * 5000


def test_a_patch_past_the_size_cap_is_413_and_changes_nothing(
    make_server: Callable[..., ServerProcess], workspace: str
) -> None:
    server = make_server(ORCH_MAX_CONFIG_BYTES="1000")
    with httpx.Client(base_url=server.workspace_url(workspace), timeout=10) as api:
        assert api.patch("/config", json={"a": "x" * 900}).status_code == 200
        refused = api.patch("/config", json={"b": "y" * 100})
        assert refused.status_code == 413
        error = refused.json()["error"]
        assert error["code"] == "CONFIG_TOO_LARGE"
        assert "ORCH_MAX_CONFIG_BYTES" in error["message"]
        size = len(json.dumps({"a": "x" * 900, "b": "y" * 100}, separators=(",", ":")))
        assert error["details"] == {"size": size, "max_bytes": 1000}
        assert api.get("/config").json() == {"a": "x" * 900}
        assert api.get("/debug-dump").json()["log"]["last_seq"] == 1
        # A patch that keeps it under the cap is fine.
        assert api.patch("/config", json={"a": None, "b": "y" * 100}).status_code == 200


def test_a_config_past_a_lowered_cap_may_shrink_but_not_grow(
    make_server: Callable[..., ServerProcess], workspace: str
) -> None:
    roomy = make_server(ORCH_MAX_CONFIG_BYTES="10000")
    big = {"a": "x" * 3000, "b": "y" * 3000}
    assert httpx.patch(roomy.workspace_url(workspace) + "/config", json=big).status_code == 200
    tight = make_server(ORCH_MAX_CONFIG_BYTES="1000")
    with httpx.Client(base_url=tight.workspace_url(workspace), timeout=10) as api:
        assert api.patch("/config", json={"c": 1}).status_code == 413
        assert api.patch("/config", json={"a": "x" * 3001}).status_code == 413
        assert api.patch("/config", json={"a": None}).json() == {"b": "y" * 3000}
        assert api.patch("/config", json={"b": "short"}).json() == {"b": "short"}


def test_concurrent_patches_lose_no_update(api: httpx.Client) -> None:
    # Each patch sets its own key; a lost update would drop one of them.
    def patch(n: int) -> None:
        with httpx.Client(base_url=str(api.base_url), timeout=10) as client:
            assert client.patch("/config", json={f"k{n}": n}).status_code == 200

    threads = [threading.Thread(target=patch, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert api.get("/config").json() == {f"k{n}": n for n in range(12)}


def test_patch_needs_a_json_object(api: httpx.Client) -> None:
    for body in (b"[1]", b'"x"', b"3"):
        response = api.patch("/config", content=body)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "VALIDATION_FAILED"
    response = api.patch("/config", content=b"{nope")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_JSON"
    assert api.get("/config").json() == {}


def test_idempotent_patch_returns_the_first_result(api: httpx.Client) -> None:
    headers = {"Idempotency-Key": "patch-1"}
    first = api.patch("/config", json={"n": 1}, headers=headers)
    api.patch("/config", json={"n": 2})
    again = api.patch("/config", json={"n": 1}, headers=headers)
    assert again.status_code == 200
    assert again.json() == first.json() == {"n": 1}
    assert api.get("/config").json() == {"n": 2}
    reused = api.patch("/config", json={"n": 3}, headers=headers)
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
