"""The fast path: which requests it takes, how a stream ends, and how a recorded call is
answered and counted.

End to end, every SSE test (tests/test_sse.py) and every test that records tool calls
(tests/test_api_log.py, the fuzz tests) runs through it: test servers are ``orchestrator
serve`` processes.
"""

import asyncio
from collections.abc import AsyncGenerator, Iterator

import httpx
import pytest
from starlette.types import Message

from api.fastpath import record_route, stream_route
from api.sse import EVENTS, TOOL_CALLS, send_event_stream
from tests.servers import ServerProcess
from tests.test_metrics import sample

WS = "/api/v1/workspaces/ws_1/orchestration"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"{WS}/events", ("ws_1", EVENTS)),
        (f"{WS}/log/stream", ("ws_1", TOOL_CALLS)),
        ("/api/v1/workspaces/bad id!/orchestration/events", ("bad id!", EVENTS)),  # 400 later
        (f"{WS}/events/", None),
        (f"{WS}/events/connections", None),
        (f"{WS}/log", None),
        ("/api/v1/workspaces//orchestration/events", None),
        ("/api/v1/workspaces/a/b/orchestration/events", None),
        ("/api/v1/workspaces/ws_1/orchestrationx/events", None),
        ("/healthz", None),
    ],
)
def test_only_the_two_stream_routes_are_taken(path: str, expected: object) -> None:
    assert stream_route(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"{WS}/log", "ws_1"),
        ("/api/v1/workspaces/bad id!/orchestration/log", "bad id!"),  # 400 later
        (f"{WS}/log/", None),
        (f"{WS}/log/stream", None),
        ("/api/v1/workspaces//orchestration/log", None),
        ("/api/v1/workspaces/ws_1/orchestration/logs", None),
    ],
)
def test_only_the_log_route_is_taken_for_recording(path: str, expected: object) -> None:
    assert record_route(path) == expected


CALL = b'{"tool":"fs.read","sessionID":"s1","agentName":"a","status":"ok","callID":"call_1"}'


def test_a_recorded_call_is_answered_as_the_app_answers_it(
    server: ServerProcess, workspace: str
) -> None:
    url = server.workspace_url(workspace) + "/log"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the body comes in pieces
        yield CALL[:10]
        yield CALL[10:]

    with httpx.Client(timeout=10) as client:
        response = client.post(url, content=chunks())
        assert response.status_code == 201
        assert response.json() == {"items": [{"seq": 1, "callID": "call_1"}]}
        assert dict(response.headers) | {"date": "", "server": ""} == {
            "content-length": str(len(response.content)),
            "content-type": "application/json",
            "date": "",
            "server": "",
            "x-content-type-options": "nosniff",
        }
        # What the fast path does not take goes to the app: its redirect of a trailing
        # slash, its 405 for another method.
        slash = client.post(url + "/", content=CALL)
        assert (slash.status_code, slash.headers["location"]) == (307, url)
        assert client.put(url, content=CALL).status_code == 405
        refused = client.post(url, content=b'{"tool":"fs.read"}')
        assert refused.status_code == 422
        assert "sessionID" in refused.json()["error"]["message"]
        metrics = client.get(server.base_url + "/metrics").text
    counted = {"endpoint": "post_log", "method": "POST"}
    assert sample(metrics, "orch_http_requests_total", **counted, status="201") >= 1
    assert sample(metrics, "orch_http_requests_total", **counted, status="422") >= 1


class Body:
    """An endless SSE body that records whether it was closed."""

    def __init__(self) -> None:
        self.closed = False

    async def frames(self) -> AsyncGenerator[bytes]:
        try:
            while True:
                yield b": keep-alive\n\n"
                await asyncio.sleep(0.001)
        finally:
            self.closed = True


@pytest.mark.anyio
async def test_a_disconnect_ends_the_stream_quietly_and_closes_the_body() -> None:
    sent: list[Message] = []
    disconnect = asyncio.Event()

    async def receive() -> Message:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        if len(sent) == 3:
            disconnect.set()

    body = Body()
    await send_event_stream(body.frames(), receive, send)
    assert body.closed
    assert sent[0]["type"] == "http.response.start"
    assert all(m["more_body"] for m in sent[1:])
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


@pytest.mark.anyio
async def test_a_cancellation_from_outside_is_not_swallowed() -> None:
    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        pass

    body = Body()
    task = asyncio.ensure_future(send_event_stream(body.frames(), receive, send))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert body.closed
