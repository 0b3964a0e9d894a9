"""The SSE fast path: which requests it takes, and how a stream ends.

End to end, every SSE test (tests/test_sse.py) runs through it: test servers are
``orchestrator serve`` processes.
"""

import asyncio
from collections.abc import AsyncGenerator

import pytest
from starlette.types import Message

from api.fastpath import stream_route
from api.sse import EVENTS, TOOL_CALLS, send_event_stream

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
