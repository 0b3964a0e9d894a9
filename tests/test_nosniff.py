"""Every text/markdown and JSON response says ``X-Content-Type-Options: nosniff``: an
exported checklist holds text any client wrote, and a browser that sniffed it as HTML would
run what it found there."""

import httpx

from tests.servers import ServerProcess
from tests.test_api_log import call


def nosniff(response: httpx.Response) -> bool:
    return bool(response.headers.get("x-content-type-options") == "nosniff")


def test_markdown_exports_are_not_sniffed(api: httpx.Client) -> None:
    created = api.post("/todo/entries", json={"entries": [{"content": "<script>x()</script>"}]})
    assert created.status_code == 201, created.text
    exported = api.get("/vault/export", params={"format": "markdown"})
    assert exported.headers["content-type"].startswith("text/markdown")
    assert nosniff(exported)
    synced = api.post("/vault/sync")
    assert synced.status_code == 201, synced.text
    snapshot_id = synced.json()["snapshot"]["id"]
    stored = api.get(f"/vault/{snapshot_id}", params={"format": "markdown"})
    assert stored.headers["content-type"].startswith("text/markdown")
    assert nosniff(stored)


def test_json_responses_are_not_sniffed(api: httpx.Client, server: ServerProcess) -> None:
    responses = {
        "built": api.get("/config"),
        "streamed": api.get("/debug-dump"),
        "the API's description": httpx.get(server.base_url + "/openapi.json", timeout=10),
        "stored bytes": api.get("/vault/export"),
        "an error": api.patch("/config", content=b"[1]"),
        "the fast path": api.post("/log", json=call()),
        "a fast path error": api.post("/log", content=b"{nope"),
    }
    assert {name: r.headers["content-type"] for name, r in responses.items()} == dict.fromkeys(
        responses, "application/json"
    )
    assert [name for name, r in responses.items() if not nosniff(r)] == []


def test_event_streams_are_not_sniffed(api: httpx.Client) -> None:
    for path in ("/events", "/log/stream"):
        head = api.head(path)  # the stream's headers, with no body to wait for
        assert head.status_code == 200, path
        assert head.headers["content-type"].startswith("text/event-stream")
        assert nosniff(head), path
