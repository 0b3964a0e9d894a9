"""Several API replicas on one Redis: live delivery across replicas, subscriber counts summed
over replicas, and a replica that dies (its count expires; its clients resume elsewhere)."""

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest

from tests.servers import ServerProcess
from tests.sse_client import EventStream, events, open_stream, seqs

CALL = {"tool": "fs.write", "sessionID": "s1", "agentName": "agent-1", "status": "ok"}
REPORT_TTL_S = 3.0  # ORCH_SUBSCRIBER_REPORT_TTL_MS on the test servers


def record(api: httpx.Client, count: int = 1) -> list[dict[str, Any]]:
    response = api.post("/log", json={"items": [CALL] * count})
    assert response.status_code == 201, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def connections(api: httpx.Client) -> int:
    body = api.get("/events/connections").json()
    assert set(body) == {"count"}
    count: int = body["count"]
    return count


def wait_for_connections(apis: list[httpx.Client], count: int, timeout: float = 2.0) -> float:
    """Poll every replica until each reports ``count``; the seconds it took."""
    started = time.monotonic()
    while (seen := [connections(api) for api in apis]) != [count] * len(apis):
        assert time.monotonic() - started < timeout, f"counts {seen}, expected {count}"
        time.sleep(0.02)
    return time.monotonic() - started


@contextmanager
def replicas(
    make_server: Callable[..., ServerProcess], workspace: str
) -> Iterator[tuple[ServerProcess, ServerProcess, httpx.Client, httpx.Client]]:
    a, b = make_server(), make_server()
    with (
        httpx.Client(base_url=a.workspace_url(workspace), timeout=10) as api_a,
        httpx.Client(base_url=b.workspace_url(workspace), timeout=10) as api_b,
    ):
        yield a, b, api_a, api_b


def live(stream: EventStream) -> None:
    """Wait for the first keep-alive: from then on the stream is served by the live feed."""
    stream.until(lambda f: f.is_heartbeat, timeout=3)


def test_an_event_written_on_one_replica_reaches_subscribers_of_the_other(
    make_server: Callable[..., ServerProcess], workspace: str
) -> None:
    with (
        replicas(make_server, workspace) as (_, _, api_a, api_b),
        open_stream(api_a, "/events", since_seq=0) as on_a,
        open_stream(api_b, "/events", since_seq=0) as on_b,
        open_stream(api_b, "/log/stream", since_seq=0) as log_on_b,
    ):
        for stream in (on_a, on_b, log_on_b):
            live(stream)

        [via_a] = record(api_a)
        frames = events(on_b.until_seq(1))
        assert [(f.id, f.event, f.json()["payload"]["callID"]) for f in frames] == [
            ("1", "tool.call", via_a["callID"])
        ]
        [tool_call] = events(log_on_b.until_seq(1))
        assert tool_call.json() == api_b.get("/log").json()["items"][0]

        [via_b] = record(api_b)
        assert via_b["seq"] == 2  # one seq across replicas
        frames = events(on_a.until_seq(2))
        assert [(f.id, f.json()["payload"]["callID"]) for f in frames] == [
            ("1", via_a["callID"]),
            ("2", via_b["callID"]),
        ]
        assert seqs(on_b.until_seq(2)) == [2]

        record(api_a, 3)
        record(api_b, 3)
        assert seqs(on_a.until_seq(8)) == seqs(on_b.until_seq(8)) == list(range(3, 9))


def test_connection_counts_are_summed_over_replicas(
    make_server: Callable[..., ServerProcess], workspace: str
) -> None:
    with replicas(make_server, workspace) as (_, _, api_a, api_b), ExitStack() as stack:
        assert connections(api_a) == connections(api_b) == 0

        # A /log/stream subscriber is not an /events subscriber: never counted.
        log_stream = stack.enter_context(open_stream(api_a, "/log/stream"))
        live(log_stream)

        held: list[ExitStack] = []
        for api in (api_a, api_a, api_b, api_b, api_b):
            one = stack.enter_context(ExitStack())
            one.enter_context(open_stream(api, "/events", since_seq=0))
            held.append(one)
        wait_for_connections([api_a, api_b], 5)
        time.sleep(0.6)  # more than one report interval (0.5 s): still 5, the log stream aside
        assert connections(api_a) == connections(api_b) == 5

        held[0].close()  # one on A
        held[4].close()  # one on B
        wait_for_connections([api_a, api_b], 3)

        for one in held:
            one.close()
        wait_for_connections([api_a, api_b], 0)


def test_a_killed_replica_count_expires_and_its_clients_resume_elsewhere(
    make_server: Callable[..., ServerProcess], workspace: str
) -> None:
    with replicas(make_server, workspace) as (_, b, api_a, api_b), ExitStack() as stack:
        on_a = stack.enter_context(open_stream(api_a, "/events", since_seq=0))
        on_b = stack.enter_context(open_stream(api_b, "/events", since_seq=0))
        stack.enter_context(open_stream(api_b, "/events", since_seq=0))
        wait_for_connections([api_a, api_b], 3)

        written = record(api_a, 3)
        seen_on_b = events(on_b.until_seq(3))
        assert seqs(seen_on_b) == [1, 2, 3]
        last_seen = seen_on_b[-1].id
        assert last_seen == "3"

        b.kill()
        killed = time.monotonic()
        with pytest.raises(httpx.TransportError):
            on_b.until_seq(4)  # the stream breaks off mid-body

        written += record(api_a, 2)  # while the client of B is away
        written += record(api_a, 2)

        waited = wait_for_connections([api_a], 1, timeout=6.0)
        assert time.monotonic() - killed < REPORT_TTL_S + 1.5, f"took {waited:.2f} s"

        with open_stream(api_a, "/events", last_event_id=last_seen) as resumed:
            rest = events(resumed.until_seq(7))
            assert seqs(rest) == [4, 5, 6, 7]
            assert [f.json()["payload"]["callID"] for f in rest] == [
                c["callID"] for c in written[3:]
            ]
            wait_for_connections([api_a], 2)
            [after] = record(api_a)
            assert seqs(resumed.until_seq(8)) == [after["seq"]] == [8]

        assert seqs(on_a.until_seq(8)) == list(range(1, 9))  # A's own client never noticed
