"""The fan-out, without Redis: queues, overflow, encode-once."""

import msgspec
import pytest

from orchestrator.events import StoredEvent
from orchestrator.feed import Feed, StreamKind, Subscriber, WorkspaceFeed


def event(seq: int, type_: str = "tool.call") -> StoredEvent:
    return StoredEvent(seq, type_, msgspec.Raw(b'{"n":%d}' % seq))


@pytest.mark.anyio
async def test_a_subscriber_gets_every_queued_frame_at_once() -> None:
    subscriber = Subscriber(capacity=10)
    assert subscriber.push([(seq, b"f%d" % seq) for seq in range(1, 4)])
    assert await subscriber.next(1) == [(1, b"f1"), (2, b"f2"), (3, b"f3")]
    assert await subscriber.next(0.01) == []  # nothing more: a heartbeat is due


@pytest.mark.anyio
async def test_a_full_queue_marks_the_subscriber_overflowed() -> None:
    subscriber = Subscriber(capacity=2)
    assert subscriber.push([(1, b"a")])
    assert subscriber.push([(2, b"b")])
    assert not subscriber.push([(3, b"c")])
    assert subscriber.overflowed
    assert await subscriber.next(1) == [(1, b"a"), (2, b"b")]  # what fit is still delivered
    assert await subscriber.next(1) == []  # and it does not wait once overflowed


@pytest.mark.anyio
async def test_a_burst_bigger_than_the_queue_fits_an_empty_queue() -> None:
    subscriber = Subscriber(capacity=2)
    burst = [(seq, b"x") for seq in range(1, 6)]
    assert subscriber.push(burst)  # it had read everything it was given: not slow
    assert not subscriber.push([(6, b"y")])  # now it has not: cut off
    assert await subscriber.next(1) == burst


@pytest.mark.anyio
async def test_each_event_is_encoded_once_for_all_subscribers() -> None:
    encoded: list[int] = []

    def encode(seq: bytes, type_: bytes, payload: bytes) -> bytes:
        encoded.append(int(seq))
        return b"frame " + seq

    calls_only = StreamKind("log", encode, lambda t: t == "tool.call")
    feed = Feed(None, None, [StreamKind("events", encode), calls_only], 8)  # type: ignore[arg-type]
    workspace = WorkspaceFeed("ws_1")
    everything = [Subscriber(8) for _ in range(100)]
    tool_calls = [Subscriber(8) for _ in range(10)]
    workspace.subscribers = {"events": set(everything), "log": set(tool_calls)}

    feed._fan_out(workspace, [event(1), event(2, "config.updated")])

    assert sorted(encoded) == [1, 1, 2]  # seq 1 once per kind, seq 2 once (log skips it)
    assert workspace.cursor == 2
    assert all(len(s._frames) == 2 for s in everything)
    assert all([seq for seq, _ in s._frames] == [1] for s in tool_calls)


@pytest.mark.anyio
async def test_a_slow_subscriber_is_cut_off_and_the_others_go_on() -> None:
    kind = StreamKind("events", lambda seq, type_, payload: b"x")
    feed = Feed(None, None, [kind], 2)  # type: ignore[arg-type]
    workspace = WorkspaceFeed("ws_1")
    slow, fast = Subscriber(2), Subscriber(100)
    workspace.subscribers = {"events": {slow, fast}}

    feed._fan_out(workspace, [event(seq) for seq in range(1, 3)])
    feed._fan_out(workspace, [event(seq) for seq in range(3, 6)])  # slow has not read 1 and 2

    assert slow.overflowed
    assert workspace.subscribers["events"] == {fast}
    assert [seq for seq, _ in fast._frames] == [1, 2, 3, 4, 5]
