import threading

import httpx


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


def test_patch_emits_config_updated_with_the_patch_and_the_result(api: httpx.Client) -> None:
    api.patch("/config", json={"a": {"b": 1}})
    events = api.get("/debug-dump").json()["events"]
    assert events == [
        {
            "seq": 1,
            "type": "config.updated",
            "payload": {"patch": {"a": {"b": 1}}, "config": {"a": {"b": 1}}},
        }
    ]


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
