"""Bad input the fuzzers found answered 5xx or accepted: each is refused with a 4xx and the
error shape, and stores nothing."""

import httpx

from api.contract import PREFIX
from api.openapi import document


def error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    code: str = response.json()["error"]["code"]
    return code


def test_a_body_of_invalid_utf8_is_400(api: httpx.Client) -> None:
    # A surrogate encoded as UTF-8: msgspec checks strings lazily, so it raised
    # UnicodeDecodeError (a 500) instead of a decode error.
    for body in (b'{"\xed\xa0\x80": 1}', b'{"a": "\xed\xa0\x80"}'):
        assert error_code(api.patch("/config", content=body), 400) == "INVALID_JSON"
        assert error_code(api.patch("/budget", content=body), 400) == "INVALID_JSON"
    assert api.get("/config").json() == {}


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def test_a_body_nested_too_deeply_is_refused(api: httpx.Client) -> None:
    # Past the decoder's recursion limit: a RecursionError, which answered 500.
    for path in ("/config", "/budget"):
        assert error_code(api.patch(path, content=nested(5000)), 400) == "INVALID_JSON"
    tool_call = b'{"tool":"t","sessionID":"s","agentName":"a","status":"ok","corrections":'
    deep_list = tool_call + b"[" * 5000 + b"]" * 5000 + b"}"
    assert error_code(api.post("/log", content=deep_list), 400) == "INVALID_JSON"
    # Just under it, the config's merge patch ran out of stack instead (a 500 as well):
    # a free-form patch nests at most 64 levels.
    for depth in (65, 960, 966):
        assert error_code(api.patch("/config", content=nested(depth)), 422) == "VALIDATION_FAILED"
    assert api.get("/config").json() == {}
    assert api.patch("/config", content=nested(64)).status_code == 200
    assert api.patch("/config", content=b'{"a":' + b"[" * 63 + b"]" * 63 + b"}").status_code == 200


def test_ids_and_words_with_a_trailing_newline_are_refused(api: httpx.Client) -> None:
    # `$` in a Python pattern also matches before a final newline: "e1\n" made an entry no
    # path could ever name (the path's id check is exact), and put a newline in Redis keys.
    created = api.post("/todo/entries", json={"entries": [{"id": "e1\n", "content": "x"}]})
    assert error_code(created, 422) == "VALIDATION_FAILED"
    phase = api.post("/phases", json={"id": "p1\n", "name": "x"})
    assert error_code(phase, 422) == "VALIDATION_FAILED"
    claim = api.post("/executor/claim", json={"sessionID": "s\n"})
    assert error_code(claim, 422) == "VALIDATION_FAILED"
    call = {"tool": "t", "sessionID": "s", "agentName": "a", "status": "ok\n"}
    assert error_code(api.post("/log", json=call), 422) == "VALIDATION_FAILED"
    imported = api.post("/import", json={"repoUrl": "/nonexistent\n"})
    assert error_code(imported, 422) == "VALIDATION_FAILED"
    assert api.get("/todo").json()["entries"] == []
    assert api.get("/phases").json()["phases"] == []
    # Without the newline each is accepted.
    assert (
        api.post("/todo/entries", json={"entries": [{"id": "e1", "content": "x"}]}).status_code
        == 201
    )
    assert api.post("/log", json={**call, "status": "ok"}).status_code == 201


def test_an_idempotency_key_names_one_operation_only(api: httpx.Client) -> None:
    # Keys were stored as "<operation>:<key>": creating a phase with key "p9:k" stored the
    # record that a PATCH of phase p9 with key "k" then found, so the PATCH answered the
    # creation and renamed nothing.
    assert api.post("/phases", json={"id": "p9", "name": "old"}).status_code == 201
    made = api.post("/phases", json={"name": "new"}, headers={"Idempotency-Key": "p9:k"})
    assert made.status_code == 201
    patched = api.patch("/phases/p9", json={"name": "new"}, headers={"Idempotency-Key": "k"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["phase"]["id"] == "p9"
    assert api.get("/phases/p9").json()["phase"]["name"] == "new"
    # A phase's prompt and a session's prompt with the same id and key are two prompts.
    prompt, key = {"text": "go", "sessionID": "s1"}, {"Idempotency-Key": "same"}
    first = api.post("/phases/p9/prompt", json=prompt, headers=key)
    second = api.post("/sessions/p9/prompt", json={"text": "go"}, headers=key)
    assert first.status_code == second.status_code == 201
    assert first.json()["prompt"]["id"] != second.json()["prompt"]["id"]
    assert second.json()["prompt"]["sessionID"] == "p9"


def test_a_key_reused_on_a_write_without_a_body_is_a_documented_422(api: httpx.Client) -> None:
    # Found by schemathesis: DELETE with ?force=true and a key first used without it is 422
    # IDEMPOTENCY_KEY_REUSED, a status the document listed only for operations with a body.
    api.post("/todo/entries", json={"entries": [{"content": "x", "id": "e1"}]})
    key = {"Idempotency-Key": "once"}
    assert api.delete("/todo/entries/e1", headers=key).status_code == 200
    again = api.delete("/todo/entries/e1", params={"force": "true"}, headers=key)
    assert error_code(again, 422) == "IDEMPOTENCY_KEY_REUSED"
    writes = [
        op
        for item in document()["paths"].values()
        for method, op in item.items()
        if method in ("post", "put", "patch", "delete") and "security" not in op
    ]
    assert writes
    assert all("422" in op["responses"] for op in writes)


def test_the_markdown_exports_are_documented(api: httpx.Client) -> None:
    # Found by schemathesis: ?format=markdown answers text/markdown, undocumented.
    exported = api.get("/vault/export", params={"format": "markdown"})
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/markdown")
    paths = document()["paths"]
    for path in ("/vault/export", "/vault/{snapshotID}"):
        content = paths[PREFIX + path]["get"]["responses"]["200"]["content"]
        assert set(content) == {"application/json", "text/markdown"}
