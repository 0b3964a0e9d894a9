"""Live delivery over SSE, end to end: a real server process, a real socket, exact frames.

`/events` and `/log/stream`: replay from `since_seq` / `Last-Event-ID`, the seam between replay
and live, resets (trimmed, purged, ahead), heartbeats and headers, slow consumers, bad input.
"""

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.servers import HOST, ServerProcess
from tests.sse_client import (
    EventStream,
    Frame,
    RawEventStream,
    events,
    open_stream,
    parse,
    seqs,
)

CALL = {"tool": "fs.read", "sessionID": "s1", "agentName": "agent-1", "status": "ok"}
QUESTION = {
    "sessionID": "s1",
    "questions": [{"question": "Go?", "header": "Go", "options": [{"label": "Yes"}]}],
    "tool": {"messageID": "m1", "callID": "c1"},
}
TITLE = "t" * 8000  # large events: a few hundred fill any socket buffer
PURGED = ["todos", "events", "budgets", "tool_logs", "session_ids", "caches"]


def record(api: httpx.Client, count: int = 1, **fields: Any) -> list[dict[str, Any]]:
    """Record ``count`` tool calls in one request; their ``{"seq", "callID"}``."""
    response = api.post("/log", json={"items": [{**CALL, **fields}] * count})
    assert response.status_code == 201, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def tool_calls(api: httpx.Client) -> list[dict[str, Any]]:
    """Every recorded ToolCall, as `GET /log` returns them, oldest first."""
    items: list[dict[str, Any]] = api.get("/log", params={"limit": 500}).json()["items"]
    return items


def as_events(frames: list[Frame]) -> list[tuple[str | None, str | None, Any]]:
    """(id, event, decoded data) of every event frame; each frame's data is one line."""
    out = []
    for frame in events(frames):
        assert frame.retry is None
        assert not frame.comments
        assert frame.data is not None
        assert "\n" not in frame.data
        out.append((frame.id, frame.event, frame.json()))
    return out


def envelope(seq: int, type_: str, payload: Any) -> tuple[str, str, Any]:
    """The expected /events frame: ``id: seq``, ``event: type``, data the event envelope."""
    return (str(seq), type_, {"seq": seq, "type": type_, "payload": payload})


def wait_for_heartbeat(stream: EventStream) -> list[Frame]:
    """Frames up to the first keep-alive: after it, the stream is live (past any replay)."""
    return stream.until(lambda f: f.is_heartbeat, timeout=3)


def wait_for_count(api: httpx.Client, count: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while (seen := api.get("/events/connections").json()) != {"count": count}:
        assert time.monotonic() < deadline, f"connections stayed {seen}, expected {count}"
        time.sleep(0.02)


# 1. Replay from since_seq, then live; no since_seq is live only.


def test_replay_from_since_seq_then_live(api: httpx.Client, workspace: str) -> None:
    assert api.patch("/config", json={"mode": "fast"}).status_code == 200  # seq 1
    [call] = record(api)  # seq 2
    question = api.post("/questions", json=QUESTION).json()["question"]  # seq 3
    [tool_call] = tool_calls(api)
    assert call == {"seq": 2, "callID": tool_call["callID"]}
    assert tool_call["workspaceID"] == workspace

    with open_stream(api, "/events", since_seq=1) as stream:
        replayed = stream.until_seq(3)
        assert as_events(replayed) == [
            envelope(2, "tool.call", tool_call),
            envelope(3, "question.asked", question),
        ]
        assert replayed == events(replayed)  # no heartbeat in the middle of a replay

        [live_call] = record(api, title="after the replay")  # seq 4, while connected
        [live_tool_call] = [c for c in tool_calls(api) if c["callID"] == live_call["callID"]]
        assert live_tool_call["title"] == "after the replay"
        assert as_events(stream.until_seq(4)) == [envelope(4, "tool.call", live_tool_call)]

    with open_stream(api, "/events", since_seq=0) as stream:
        assert as_events(stream.until_seq(4))[0] == envelope(
            1, "config.updated", {"patch": {"mode": "fast"}}
        )


def test_since_seq_at_the_end_replays_nothing(api: httpx.Client) -> None:
    record(api, 2)
    with open_stream(api, "/events", since_seq=2) as stream:
        assert wait_for_heartbeat(stream) == [Frame(comments=("keep-alive",))]
        [call] = record(api)
        assert seqs(stream.until_seq(3)) == [call["seq"]] == [3]


def test_without_since_seq_the_stream_is_live_only(api: httpx.Client) -> None:
    record(api, 3)
    with open_stream(api, "/events") as stream:
        # Nothing of the three earlier events: the first frame after `retry:` is a keep-alive.
        assert wait_for_heartbeat(stream) == [Frame(comments=("keep-alive",))]
        record(api, 2)
        assert seqs(stream.until_seq(5)) == [4, 5]


# 2. Last-Event-ID wins over since_seq; resuming gives exactly the rest.


def test_last_event_id_wins_over_since_seq(api: httpx.Client) -> None:
    record(api, 5)
    with open_stream(api, "/events", since_seq=1, last_event_id="3") as stream:
        assert seqs(stream.until_seq(5)) == [4, 5]
    with open_stream(api, "/log/stream", since_seq=4, last_event_id="0") as stream:
        assert seqs(stream.until_seq(5)) == [1, 2, 3, 4, 5]


def test_resuming_with_the_last_id_seen_gives_exactly_the_rest(api: httpx.Client) -> None:
    calls = record(api, 5)
    with open_stream(api, "/events", since_seq=0) as stream:
        first = events(stream.until_seq(3))
    assert seqs(first) == [1, 2, 3]
    last_seen = first[-1].id
    assert last_seen == "3"

    calls += record(api, 2)  # written while the client is away
    with open_stream(api, "/events", last_event_id=last_seen) as stream:
        rest = stream.until_seq(7)
        assert seqs(rest) == [4, 5, 6, 7]
        assert [f.json()["payload"]["callID"] for f in events(rest)] == [
            c["callID"] for c in calls[3:]
        ]
        calls += record(api)  # and live after the replay
        assert seqs(stream.until_seq(8)) == [8]


# 3. The seam between replay and live, under continuous writes.

PREFILL = 2500  # more than one replay batch (1000)
LIVE = 900


def test_clients_joining_during_writes_get_every_event_once_in_order(
    server: ServerProcess, workspace: str
) -> None:
    base = server.workspace_url(workspace)
    total = PREFILL + LIVE
    call_ids: dict[int, str] = {}
    written = 0
    joined_at: list[int] = []  # how far the writer was when each client's stream opened
    lock = threading.Lock()

    def write(client: httpx.Client, count: int) -> None:
        nonlocal written
        items = record(client, count, title=f"batch of {count}")
        with lock:
            call_ids.update((item["seq"], item["callID"]) for item in items)
            written = max(written, items[-1]["seq"])

    def writer() -> None:
        with httpx.Client(base_url=base, timeout=10) as client:
            for size in itertools.cycle([1, 3, 7, 2, 5, 1, 11, 4]):
                if written >= total:
                    return
                write(client, min(size, total - written))

    def subscriber(start_after: int) -> list[Frame]:
        deadline = time.monotonic() + 20
        while written < start_after:
            assert time.monotonic() < deadline, "the writer stalled"
            time.sleep(0.001)
        with (
            httpx.Client(base_url=base, timeout=10) as client,
            open_stream(client, "/events", since_seq=0) as stream,
        ):
            joined_at.append(written)
            return stream.until_seq(total, timeout=30)

    with httpx.Client(base_url=base, timeout=10) as client:
        for count in (1000, 1000, PREFILL - 2000):
            write(client, count)
    assert written == PREFILL

    starts = [PREFILL, *range(PREFILL + 50, total, 150), total]
    with ThreadPoolExecutor(max_workers=len(starts) + 1) as pool:
        clients = [pool.submit(subscriber, start) for start in starts]
        pool.submit(writer).result(timeout=30)
        received = [future.result(timeout=30) for future in clients]

    assert written == total
    # Otherwise the test would not test the seam: most clients joined while writes went on.
    assert sum(PREFILL < at < total for at in joined_at) >= 3, sorted(joined_at)
    assert sorted(call_ids) == list(range(1, total + 1))
    for start, frames in zip(starts, received, strict=True):
        got = events(frames)
        assert seqs(got) == list(range(1, total + 1)), f"client started after {start}"
        for frame in got:
            data = frame.json()
            assert frame.event == data["type"] == "tool.call"
            assert data["seq"] == frame.seq
            assert data["payload"]["callID"] == call_ids[frame.seq]


# 4. Resets: trimmed by retention, purged, ahead.


def test_reset_when_since_seq_was_trimmed(
    make_server: Callable[..., ServerProcess], workspace: str
) -> None:
    server = make_server(ORCH_EVENT_RETENTION="10")
    with httpx.Client(base_url=server.workspace_url(workspace), timeout=10) as api:

        def bounds() -> tuple[int, int]:
            log = api.get("/debug-dump").json()["log"]
            return log["first_seq"], log["last_seq"]

        record(api, 1000)
        first, last = bounds()
        assert last == 1000
        assert 1 < first <= last - 9  # trimmed, approximately, but at least 10 kept

        reset = {"since_seq": 0, "first_seq": first, "last_seq": 1000, "reason": "trimmed"}
        with open_stream(api, "/events", since_seq=0) as stream:
            frames = as_events(stream.until_seq(1000))
            assert frames[0] == envelope(first - 1, "reset", reset)
            assert [seq for seq, _, _ in frames[1:]] == [str(s) for s in range(first, 1001)]
            assert {event for _, event, _ in frames[1:]} == {"tool.call"}
            record(api)
            assert seqs(stream.until_seq(1001)) == [1001]

        first, last = bounds()  # the append may have trimmed some more
        assert last == 1001
        # /log/stream frames the reset the same way, its data being the bare payload.
        reset = {"since_seq": first - 2, "first_seq": first, "last_seq": 1001, "reason": "trimmed"}
        with open_stream(api, "/log/stream", since_seq=first - 2) as stream:
            frames = as_events(stream.until_seq(1001))
            assert frames[0] == (str(first - 1), "reset", reset)
            assert [seq for seq, _, _ in frames[1:]] == [str(s) for s in range(first, 1002)]

        # Resuming from just before the first retained event loses nothing: no reset.
        with open_stream(api, "/events", last_event_id=str(first - 1)) as stream:
            frames = as_events(stream.until_seq(1001))
            assert [seq for seq, _, _ in frames] == [str(s) for s in range(first, 1002)]


def test_reset_after_purge_then_the_purged_event(api: httpx.Client) -> None:
    record(api, 3)
    assert api.post("/purge").json() == {"purged": PURGED}  # seq 4

    reset = {"since_seq": 0, "first_seq": 4, "last_seq": 4, "reason": "trimmed"}
    with open_stream(api, "/events", since_seq=0) as stream:
        assert as_events(stream.until_seq(4)) == [
            envelope(3, "reset", reset),
            envelope(4, "orchestration.purged", {"purged": PURGED}),
        ]
        [call] = record(api)
        assert call["seq"] == 5  # seq goes on after a purge
        [tool_call] = tool_calls(api)
        assert as_events(stream.until_seq(5)) == [envelope(5, "tool.call", tool_call)]

    with open_stream(api, "/events", since_seq=2) as stream:
        reset = {**reset, "since_seq": 2, "last_seq": 5}
        assert as_events(stream.until_seq(5))[0] == envelope(3, "reset", reset)
    with open_stream(api, "/events", since_seq=3) as stream:  # nothing lost after 3: no reset
        assert seqs(stream.until_seq(5)) == [4, 5]


def test_reset_when_since_seq_is_ahead(api: httpx.Client) -> None:
    record(api, 2)
    reset = {"since_seq": 10, "first_seq": 1, "last_seq": 2, "reason": "ahead"}
    with open_stream(api, "/events", since_seq=10) as stream:
        assert as_events(stream.until_seq(2)) == [envelope(2, "reset", reset)]
        record(api)
        assert seqs(stream.until_seq(3)) == [3]


def test_reset_ahead_of_an_empty_workspace(api: httpx.Client) -> None:
    reset = {"since_seq": 1, "first_seq": 1, "last_seq": 0, "reason": "ahead"}
    with open_stream(api, "/log/stream", last_event_id="1") as stream:
        assert as_events(stream.until(lambda f: f.is_event)) == [("0", "reset", reset)]
        record(api)
        assert seqs(stream.until_seq(1)) == [1]


def assert_no_silent_gap(since_seq: int, frames: list[Frame]) -> None:
    """Every event follows the one before it, unless a reset frame announced the jump (or a
    reconnect frame ended the stream where the client then resumed)."""
    position = since_seq
    for frame in events(frames):
        data = frame.json()
        assert data["seq"] == frame.seq
        if frame.event == "reset":
            assert data["payload"]["since_seq"] == position
            assert data["payload"]["first_seq"] == frame.seq + 1
            assert data["payload"]["reason"] == "trimmed"
        elif frame.event == "reconnect":
            assert data["payload"]["last_seq"] == frame.seq == position
        else:
            assert frame.seq == position + 1, f"silent gap: {position} -> {frame.seq}"
        position = frame.seq


REPLAY_RETENTION = 1000


def test_trimming_during_a_replay_is_announced_not_a_silent_gap(
    make_server: Callable[..., ServerProcess], workspace: str
) -> None:
    # A client replays from the first retained event but reads slowly (its socket buffers are
    # full); meanwhile writes trim the log past the part it has yet to be sent. The stream must
    # say so (a reset frame, or a reconnect that then resets), never skip events silently.
    server = make_server(ORCH_EVENT_RETENTION=str(REPLAY_RETENTION), ORCH_REPLAY_BATCH="100")
    base = server.workspace_url(workspace)
    with httpx.Client(base_url=base, timeout=10) as api:
        for _ in range(12):
            record(api, 100, title=TITLE)
        first = api.get("/debug-dump").json()["log"]["first_seq"]
        assert first > 1

        path = urlsplit(base).path + f"/events?since_seq={first - 1}"
        with RawEventStream(HOST, server.port, path) as slow:
            wait_for_count(api, 1)
            time.sleep(0.2)  # the replay has begun (and stalled on the full socket buffers)
            for _ in range(20):
                record(api, 100, title=TITLE)
            new_first, last = (
                api.get("/debug-dump").json()["log"][k] for k in ("first_seq", "last_seq")
            )
            assert last == 3200
            # More was trimmed than any socket buffer holds: the stalled client lost events.
            assert (new_first - first) * len(TITLE) > 6 * 2**20

            assert slow.read_head()[0] == 200
            frames = slow.until(lambda f: f.id == str(last), timeout=20)
        *_, end = events(frames)
        if end.event == "reconnect":
            with open_stream(api, "/events", last_event_id=end.id) as resumed:
                frames += resumed.until_seq(last, timeout=20)

    assert frames[0] == Frame(retry=2000)
    assert events(frames)[-1].id == str(last)
    assert_no_silent_gap(first - 1, frames)


# 5. /log/stream: tool calls only, data the ToolCall itself, resumable.


def test_log_stream_carries_only_tool_calls(api: httpx.Client) -> None:
    api.patch("/config", json={"a": 1})  # 1
    record(api, title="first")  # 2
    api.post("/questions", json=QUESTION)  # 3
    record(api, 2, target="src/x.py")  # 4, 5
    calls = tool_calls(api)
    assert len(calls) == 3

    with open_stream(api, "/log/stream", since_seq=0) as stream:
        replayed = stream.until_seq(5)
        assert as_events(replayed) == [
            ("2", "tool.call", calls[0]),
            ("4", "tool.call", calls[1]),
            ("5", "tool.call", calls[2]),
        ]
        api.patch("/config", json={"a": 2})  # 6: not on this stream
        [call] = record(api, status="error")  # 7
        live = stream.until_seq(7)
        [tool_call] = [c for c in tool_calls(api) if c["callID"] == call["callID"]]
        assert tool_call["status"] == "error"
        assert as_events(live) == [("7", "tool.call", tool_call)]

    with open_stream(api, "/log/stream", since_seq=4) as stream:
        assert seqs(stream.until_seq(7)) == [5, 7]
    with open_stream(api, "/log/stream", last_event_id="5") as stream:
        assert seqs(stream.until_seq(7)) == [7]


# 6. Heartbeats and headers.


def test_heartbeat_and_headers_on_an_idle_stream(api: httpx.Client) -> None:
    started = time.monotonic()
    with open_stream(api, "/events") as events_, open_stream(api, "/log/stream") as log:
        for stream in (events_, log):
            headers = stream.response.headers
            assert headers["content-type"].split(";")[0] == "text/event-stream"
            assert "no-cache" in [d.strip() for d in headers["cache-control"].split(",")]
            assert headers["x-accel-buffering"] == "no"
            assert "content-length" not in headers

        for stream in (events_, log):
            assert stream.next() == Frame(comments=("keep-alive",))
        assert time.monotonic() - started < 2.0  # ORCH_HEARTBEAT_S is 1 s on test servers
        for stream in (events_, log):
            assert stream.next() == Frame(comments=("keep-alive",))  # and again, ~1 s later
        assert time.monotonic() - started < 3.0


def test_the_raw_bytes_of_a_stream(server: ServerProcess, workspace: str) -> None:
    with httpx.Client(base_url=server.workspace_url(workspace), timeout=10) as api:
        api.patch("/config", json={"k": "v"})
        with api.stream("GET", "/events", params={"since_seq": "0"}) as response:
            body = b""
            for chunk in response.iter_raw():
                body += chunk
                if body.endswith(b": keep-alive\n\n"):
                    break
    assert body == (
        b"retry: 2000\n\n"
        b"id: 1\nevent: config.updated\n"
        b'data: {"seq":1,"type":"config.updated","payload":'
        b'{"patch":{"k":"v"}}}\n\n'
        b": keep-alive\n\n"
    )


# 7. Slow consumers are cut off; nobody else is stalled.

SLOW_TOTAL = 1200
SLOW_BATCH = 4  # no more than the queue (8) per append: see the next test


def test_a_slow_consumer_is_cut_off_and_nobody_else_stalls(
    make_server: Callable[..., ServerProcess], workspace: str
) -> None:
    server = make_server(ORCH_SUBSCRIBER_QUEUE="8")
    base = server.workspace_url(workspace)

    def fast_reader() -> list[Frame]:
        with (
            httpx.Client(base_url=base, timeout=10) as client,
            open_stream(client, "/events", since_seq=0) as stream,
        ):
            return stream.until_seq(SLOW_TOTAL, timeout=30)

    path = urlsplit(base).path + "/events?since_seq=0"
    with (
        httpx.Client(base_url=base, timeout=10) as api,
        RawEventStream(HOST, server.port, path) as slow,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        fast_future = pool.submit(fast_reader)
        wait_for_count(api, 2)  # both subscribed before the first write
        started = time.monotonic()
        for _ in range(SLOW_TOTAL // SLOW_BATCH):
            record(api, SLOW_BATCH, title=TITLE)
        write_s = time.monotonic() - started

        fast = events(fast_future.result(timeout=30))
        assert seqs(fast) == list(range(1, SLOW_TOTAL + 1))  # every event, no reconnect
        assert {f.event for f in fast} == {"tool.call"}
        assert write_s < 20  # the writes were never held up by the stalled reader

        status, headers, body = slow.read_response()
        assert status == 200
        assert headers["content-type"].startswith("text/event-stream")
        frames = parse(body)
        assert frames[0] == Frame(retry=2000)
        *delivered, cut = events(frames)
        count = len(delivered)
        assert 0 < count < SLOW_TOTAL
        assert seqs(delivered) == list(range(1, count + 1))  # contiguous up to the cut
        assert cut.id == str(count)
        assert cut.event == "reconnect"
        assert cut.json() == {
            "seq": count,
            "type": "reconnect",
            "payload": {"reason": "slow_consumer", "last_seq": count},
        }

        with open_stream(api, "/events", last_event_id=str(count)) as resumed:
            rest = events(resumed.until_seq(SLOW_TOTAL, timeout=20))
        assert seqs(rest) == list(range(count + 1, SLOW_TOTAL + 1))
        assert all(f.json()["payload"]["title"] == TITLE for f in rest)


def test_a_burst_bigger_than_the_queue_does_not_cut_off_a_subscriber_that_keeps_up(
    make_server: Callable[..., ServerProcess], workspace: str
) -> None:
    # The subscriber is idle, its queue empty, when one append of 20 events lands: it has not
    # fallen behind, it must get all 20 (DESIGN: only "a subscriber that falls behind is cut off").
    server = make_server(ORCH_SUBSCRIBER_QUEUE="8")
    with (
        httpx.Client(base_url=server.workspace_url(workspace), timeout=10) as api,
        open_stream(api, "/events", since_seq=0) as stream,
    ):
        wait_for_heartbeat(stream)
        record(api, 20)
        frames = events(stream.until_seq(20))
        assert [(f.id, f.event) for f in frames] == [(str(s), "tool.call") for s in range(1, 21)]


def test_a_stalled_client_that_goes_away_is_no_longer_counted(
    make_server: Callable[..., ServerProcess], workspace: str
) -> None:
    server = make_server()
    base = server.workspace_url(workspace)
    with httpx.Client(base_url=base, timeout=10) as api:
        path = urlsplit(base).path + "/events?since_seq=0"
        with RawEventStream(HOST, server.port, path):
            wait_for_count(api, 1)
            for _ in range(8):
                record(api, 100, title=TITLE)  # ~6.4 MB: the server's writes to it stall
            time.sleep(0.3)
            assert api.get("/events/connections").json() == {"count": 1}
        wait_for_count(api, 0)


# 8. Bad since_seq and Last-Event-ID are 400, as JSON.


LAST_EVENT_ID = b"Last-Event-ID"


@pytest.mark.parametrize("path", ["/events", "/log/stream"])
@pytest.mark.parametrize(
    ("params", "headers", "name"),
    [
        pytest.param({"since_seq": "-1"}, [], "since_seq", id="negative"),
        pytest.param({"since_seq": "abc"}, [], "since_seq", id="abc"),
        pytest.param({"since_seq": "1.5"}, [], "since_seq", id="fraction"),
        pytest.param({"since_seq": ""}, [], "since_seq", id="empty"),
        pytest.param({"since_seq": "9" * 20}, [], "since_seq", id="too-big"),
        # "²": str.isdigit() says it is a digit, int() refuses it.
        pytest.param({"since_seq": "\u00b2"}, [], "since_seq", id="superscript-two"),
        pytest.param({}, [(LAST_EVENT_ID, b"abc")], "Last-Event-ID", id="header-abc"),
        pytest.param({}, [(LAST_EVENT_ID, b"-1")], "Last-Event-ID", id="header-negative"),
        pytest.param(  # "²" in latin-1
            {}, [(LAST_EVENT_ID, b"\xb2")], "Last-Event-ID", id="header-superscript-two"
        ),
        pytest.param(  # the header wins, even over a good since_seq
            {"since_seq": "1"}, [(LAST_EVENT_ID, b"x1")], "Last-Event-ID", id="header-wins"
        ),
    ],
)
def test_bad_resume_points_are_400(
    api: httpx.Client,
    path: str,
    params: dict[str, str],
    headers: list[tuple[bytes, bytes]],
    name: str,
) -> None:
    with api.stream("GET", path, params=params, headers=headers) as response:
        # Checked before reading: a wrongly accepted resume point would be an endless stream.
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/json")
        response.read()
    error = response.json()["error"]
    assert error["code"] == "INVALID_INPUT"
    assert name in error["message"]
