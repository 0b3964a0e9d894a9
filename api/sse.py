"""Server-Sent Events: frame encoding, and the replay-then-live stream.

A stream first registers with the feed, then replays the log from the requested seq in large
batches up to its end, then serves the live queue, skipping anything it already sent: every
event once, no gap at the seam.
"""

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import msgspec
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.responses import NOSNIFF_HEADERS
from orchestrator.eventlog import EventLog, RawEntry, entry_seq
from orchestrator.events import ToolCall
from orchestrator.feed import Feed, StreamKind
from orchestrator.settings import Settings

HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: do not buffer
    "Connection": "keep-alive",
    **NOSNIFF_HEADERS,  # frames carry text clients wrote, as every body does
}
HEARTBEAT = b": keep-alive\n\n"


def event_frame(seq: bytes, type_: bytes, payload: bytes) -> bytes:
    # The stored payload is already JSON on one line: framing needs no re-encoding.
    return b'id: %b\nevent: %b\ndata: {"seq":%b,"type":"%b","payload":%b}\n\n' % (
        seq,
        type_,
        seq,
        type_,
        payload,
    )


def tool_call_frame(seq: bytes, type_: bytes, payload: bytes) -> bytes:
    return b"id: %b\nevent: tool.call\ndata: %b\n\n" % (seq, payload)


EVENTS = StreamKind("events", event_frame)
TOOL_CALLS = StreamKind("log", tool_call_frame, lambda event_type: event_type == ToolCall.type)
KINDS = [EVENTS, TOOL_CALLS]


def control_frame(kind: StreamKind, name: str, seq: int, payload: dict[str, object]) -> bytes:
    data = msgspec.json.encode(payload)
    if kind is EVENTS:
        data = msgspec.json.encode({"seq": seq, "type": name, "payload": msgspec.Raw(data)})
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, name.encode(), data)


# Entries in a replay's first read of the log: few, since nothing is known yet of their size
# (the reads double from there while the events are small).
FIRST_READ = 4


async def replay(
    eventlog: EventLog,
    workspace_id: str,
    kind: StreamKind,
    position: int,
    batch: int,
    batch_bytes: int,
) -> AsyncIterator[tuple[int, bytes]]:
    """The retained events after ``position`` in large batches, as (seq reached, bytes).

    A batch stops at ``batch`` events or at ``batch_bytes`` bytes (one event at least), so a
    client that does not read makes the server hold a batch or two (one in the socket's
    buffer, one waiting to be written), however large its events: 1,000 events of a few
    hundred KB each were held per client. Each read is bounded in bytes too (see
    ``EventLog.read_batch``): a read sized for small events that met a run of large ones
    fetched up to 1,000 of them (~1 GB) to keep one. The count of the next read is learnt
    from the last: it doubles while batches are full of small events, and drops to what
    fitted once a batch was cut at the byte budget.

    Seqs in the log have no holes, so a jump means the log was trimmed or purged while the
    replay went on: that is announced with a reset frame, as at the start, never a silent gap.
    """
    count = min(FIRST_READ, batch)
    while True:
        entries, cut = await eventlog.read_batch(workspace_id, position, count, batch_bytes)
        if entries and (first := entry_seq(entries[0])) > position + 1:
            last = await eventlog.last_seq(workspace_id)
            details = {"since_seq": position, "first_seq": first, "last_seq": last}
            reset = control_frame(kind, "reset", first - 1, {**details, "reason": "trimmed"})
            yield first - 1, reset
        more = cut or len(entries) == count
        count = len(entries) if cut else min(count * 2, batch)  # the next read's
        if entries:
            position = entry_seq(entries[-1])
            chunk = frames(kind, entries)
            del entries  # while the client is slow to take the chunk, only the chunk is held
            yield position, chunk
        if not more:
            return


def frames(kind: StreamKind, entries: list[RawEntry]) -> bytes:
    """Frames straight from XRANGE's reply: no per-event objects on the replay path."""
    chunks = []
    for entry_id, (type_, payload) in entries:
        if kind.accepts(type_.decode()):
            chunks.append(kind.frame(entry_id[:-2], type_, payload))  # id "<seq>-0"
    return b"".join(chunks)


async def stream(
    feed: Feed,
    eventlog: EventLog,
    settings: Settings,
    workspace_id: str,
    kind: StreamKind,
    since: int | None,
) -> AsyncGenerator[bytes]:
    yield b"retry: %d\n\n" % settings.sse_retry_ms
    async with feed.subscribe(workspace_id, kind.name) as subscriber:
        first, last = await eventlog.bounds(workspace_id)
        position = last if since is None else since
        if since is not None and not first - 1 <= since <= last:
            # The events after `since` were trimmed or purged, or `since` is from the future:
            # say so, rather than leave a silent gap.
            position = first - 1 if since < first - 1 else last
            reason = "trimmed" if since < first - 1 else "ahead"
            details = {"since_seq": since, "first_seq": first, "last_seq": last, "reason": reason}
            yield control_frame(kind, "reset", position, details)
        if since is not None:
            batches = replay(
                eventlog,
                workspace_id,
                kind,
                position,
                settings.replay_batch,
                settings.replay_batch_bytes,
            )
            async for reached, chunk in batches:
                position = reached
                if chunk:
                    yield chunk
        while True:
            frames = await subscriber.next(settings.heartbeat_s)
            fresh = [data for seq, data in frames if seq > position]
            if fresh:
                yield b"".join(fresh)
                position = frames[-1][0]
            elif subscriber.overflowed or subscriber.closed:
                reason = "slow_consumer" if subscriber.overflowed else "shutdown"
                details = {"reason": reason, "last_seq": position}
                yield control_frame(kind, "reconnect", position, details)
                return
            elif not frames:
                yield HEARTBEAT


RAW_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8")] + [
    (k.lower().encode(), v.encode()) for k, v in HEADERS.items()
]


class EventStreamResponse(Response):
    """Streams an SSE body, and stops as soon as the client goes away (not at the next write),
    so subscriber counts stay true."""

    media_type = "text/event-stream"

    def __init__(self, body: AsyncGenerator[bytes]) -> None:
        self.status_code = 200
        self.background = None
        self.body_iterator = body
        self.raw_headers = RAW_HEADERS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "HEAD":
            # The headers a GET would get, and no body: nothing is subscribed or held. Run
            # as a stream, it stayed subscribed for as long as the connection lasted.
            await self.body_iterator.aclose()
            await send({"type": "http.response.start", "status": 200, "headers": RAW_HEADERS})
            await send({"type": "http.response.body", "body": b""})
            return
        await send_event_stream(self.body_iterator, receive, send)


async def send_event_stream(body: AsyncGenerator[bytes], receive: Receive, send: Send) -> None:
    """Send an SSE response until the body ends or the client goes away.

    A server holds thousands of these for hours, so what each keeps is counted: the watcher
    of the client's disconnect is one bare task, cancelled before this returns, rather than
    an anyio task group (its scope, task state and wrapper cost ~3.5 KB per connection).

    Once the client is gone the stream must end, whatever it was awaiting: the watcher
    cancels it until it has (see DisconnectWatch), and nothing more is sent, since uvicorn's
    send returns without a word on a closed connection and a stream that missed its
    cancellation would otherwise write heartbeats into it for good.
    """
    task = asyncio.current_task()
    assert task is not None
    watch = DisconnectWatch(task)
    watcher = asyncio.ensure_future(watch.run(receive))
    try:
        await send({"type": "http.response.start", "status": 200, "headers": RAW_HEADERS})
        async for chunk in body:
            if watch.gone:
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        # Our own cancellation (the client left) ends the response quietly; any other is
        # re-raised.
        if not watch.cancels or watch.withdraw() > 0:
            raise
    finally:
        watch.streaming = False
        watcher.cancel()
        watch.withdraw()  # a cancellation swallowed on the way is taken back too
        await body.aclose()  # a body cut off in a send still unsubscribes now


# How often a stream whose client left is cancelled again until it ends: a swallowed
# cancellation costs a stream this long at most, and a watcher wakes no more often.
RECANCEL_S = 0.05


class DisconnectWatch:
    """Cancels the streaming task when the client disconnects, and only while it streams.

    Once is not enough: a cancellation that arrives as an awaited call completes can be
    swallowed on its way (``asyncio.wait_for`` in Python 3.11 returns the call's result and
    drops it, and redis-py awaits with it), and the stream then carries on. So the task is
    cancelled again every ``RECANCEL_S`` until it has stopped streaming; each request is
    counted, so that all of them are taken back (``withdraw``) and an outside cancellation
    (the server shutting down) still tells.
    """

    __slots__ = ("cancels", "gone", "streaming", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.streaming = True
        self.gone = False
        self.cancels = 0

    async def run(self, receive: Receive) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception:  # a failing receive is a lost client too
            pass
        self.gone = True
        while self.streaming:
            self.cancels += 1
            self.task.cancel()
            await asyncio.sleep(RECANCEL_S)

    def withdraw(self) -> int:
        """Take back this watch's cancellation requests; the number left (others')."""
        for _ in range(self.cancels):
            self.task.uncancel()
        self.cancels = 0
        return self.task.cancelling()
