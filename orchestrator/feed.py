"""Live delivery: a few shared Redis readers per replica, fanned out to local subscribers.

A subscriber never holds a Redis connection, nor does a workspace: the replica's active
workspaces are shared out among readers, each one task on one connection of its own doing a
single blocking ``XREAD COUNT c BLOCK ms STREAMS k1..kn id1..idn`` over the streams of up to
``streams_per_read`` workspaces. A replica's feed connections are thus ceil(active workspaces
/ streams_per_read), a handful, where one reader per workspace needed a connection each and
ran out of them (redis-py's pool refused the 101st). Each event, encoded once per stream kind,
goes into every subscriber's bounded queue; a subscriber whose queue fills is cut off (it
reconnects from its last seq and catches up from the log), so nobody's slowness stalls anyone.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoPermissionError, RedisError

from orchestrator.errors import Unavailable
from orchestrator.eventlog import EventLog, parse_raw_entries
from orchestrator.events import StoredEvent
from orchestrator.keys import WorkspaceKeys

log = structlog.get_logger(__name__)

T = TypeVar("T")
Frame = tuple[int, bytes]  # (seq, encoded bytes)
XREAD_BLOCK_MS = 5000
XREAD_COUNT = 1000  # entries per stream per read
STREAMS_PER_READ = 1000
WAKE_RETRY_S = 0.01
WAKE_REFUSED = (
    "the Redis user may not run CLIENT UNBLOCK (ACL: +client|unblock, in @admin and "
    "@dangerous): a workspace that becomes active waits for the shared read's BLOCK "
    "timeout (up to 5 s) before its first live events"
)


@dataclass(frozen=True)
class StreamKind:
    """One kind of live stream: which events it carries and how one is framed, from its seq
    (ASCII digits), type and payload JSON as stored, so no event is ever re-encoded."""

    name: str
    frame: Callable[[bytes, bytes, bytes], bytes]
    accepts: Callable[[str], bool] = lambda event_type: True

    def encode(self, event: StoredEvent) -> bytes:
        return self.frame(b"%d" % event.seq, event.type.encode(), bytes(event.payload))


class Subscriber:
    """One SSE client's bounded queue.

    There is one per connection, so it is kept lean: a list, a future only while its client
    waits, and a plain loop timer for the heartbeat timeout (an anyio cancel scope per wait
    cost a scope, a timer and two sets per wake-up, and its garbage drove the collector).
    """

    __slots__ = ("_capacity", "_frames", "_waiter", "closed", "overflowed")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._frames: list[Frame] = []
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        self.closed = False  # the server is shutting down: end the stream

    def close(self) -> None:
        self.closed = True
        self._wake()

    def push(self, frames: list[Frame]) -> bool:
        """Queue the frames of one read from the log without waiting, all or none.

        False (and ``overflowed``) when they do not fit. A subscriber with an empty queue has
        taken everything it was given, so it always takes the whole batch: a burst bigger than
        the queue is no sign of slowness, only frames left unread are. The queue thus holds at
        most ``capacity`` frames, or one read's worth.
        """
        if self._frames and len(self._frames) + len(frames) > self._capacity:
            self.overflowed = True
            self._wake()
            return False
        self._frames.extend(frames)
        self._wake()
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self, wait_s: float) -> list[Frame]:
        """Every queued frame, waiting up to ``wait_s`` for one (empty list if none came)."""
        if not self._frames and not self.overflowed and not self.closed:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(wait_s, self._wake)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        frames, self._frames = self._frames, []
        return frames


@dataclass
class WorkspaceFeed:
    workspace_id: str
    cursor: int = 0  # the last seq fanned out (or the log's last seq when it joined)
    subscribers: dict[str, set[Subscriber]] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    reader: "Reader | None" = None
    stream: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.stream = WorkspaceKeys(self.workspace_id).events.encode()

    def count(self, kind: str | None = None) -> int:
        if kind is not None:
            return len(self.subscribers.get(kind, ()))
        return sum(len(s) for s in self.subscribers.values())


class Reader:
    """One blocking XREAD over the streams of up to ``capacity`` workspaces, on a connection
    of its own.

    ``joined`` counts the workspaces that ever joined it, and ``sent`` is what ``joined`` was
    when it last sent a read: while ``sent < joined``, the read Redis holds lacks a stream,
    and ``Feed._wake`` unblocks it (by ``client_id``) so that the next one names it.
    """

    __slots__ = ("capacity", "client_id", "feeds", "joined", "running", "sent", "waking")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.feeds: dict[bytes, WorkspaceFeed] = {}  # by stream key
        self.joined = 0
        self.sent = 0
        self.client_id: int | None = None  # of the connection that sent the last read
        self.running = True
        self.waking = False

    @property
    def full(self) -> bool:
        return len(self.feeds) >= self.capacity

    def add(self, feed: WorkspaceFeed) -> None:
        self.feeds[feed.stream] = feed
        feed.reader = self
        self.joined += 1

    def remove(self, feed: WorkspaceFeed) -> None:
        if self.feeds.get(feed.stream) is feed:
            del self.feeds[feed.stream]

    async def read(self, connection: AbstractConnection) -> Any:
        """One read of every stream from its workspace's cursor: the raw XREAD reply.

        CLIENT ID goes in the same write, so the id is always that of the connection the read
        is on, even after redis-py reconnected it (a health check, a Redis restart).
        """
        streams = list(self.feeds.values())
        self.sent = self.joined
        xread = [b"XREAD", b"COUNT", b"%d" % XREAD_COUNT, b"BLOCK", b"%d" % XREAD_BLOCK_MS]
        xread += [b"STREAMS", *(f.stream for f in streams), *(b"%d-0" % f.cursor for f in streams)]
        await connection.send_packed_command(connection.pack_commands([[b"CLIENT", b"ID"], xread]))
        self.client_id = int(await connection.read_response())
        return await connection.read_response()


def stream_replies(reply: Any) -> Iterable[tuple[bytes, list[Any]]]:
    """(stream key, entries) of a raw XREAD reply: a map in RESP3, pairs in RESP2."""
    if not reply:
        return ()
    return reply.items() if isinstance(reply, dict) else reply


class Feed:
    def __init__(
        self,
        blocking_redis: Redis,
        eventlog: EventLog,
        kinds: list[StreamKind],
        queue_size: int,
        on_count: Callable[[str, int], None] = lambda ws, n: None,
        counted_kind: str = "events",
        streams_per_read: int = STREAMS_PER_READ,
    ) -> None:
        if streams_per_read < 1:
            raise ValueError(f"streams_per_read={streams_per_read}: expected at least 1")
        self.redis = blocking_redis  # its pool gives each reader its connection for good
        self.eventlog = eventlog
        self.kinds = {k.name: k for k in kinds}
        self.queue_size = queue_size
        self.on_count = on_count
        self.counted_kind = counted_kind
        self.streams_per_read = streams_per_read
        self._feeds: dict[str, WorkspaceFeed] = {}
        self._readers: list[Reader] = []
        self._task_group: TaskGroup | None = None
        self._closed = False
        self._wake_refused = False  # said once: every wake would say it again

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._task_group = None

    def count(self, workspace_id: str) -> int:
        feed = self._feeds.get(workspace_id)
        return 0 if feed is None else feed.count(self.counted_kind)

    def state(self, workspace_id: str) -> dict[str, object] | None:
        """This process's live state for the workspace (for the debug dump)."""
        feed = self._feeds.get(workspace_id)
        if feed is None:
            return None
        return {
            "cursor": feed.cursor,
            "subscribers": {k: len(s) for k, s in feed.subscribers.items()},
        }

    def active(self) -> list[str]:
        """Workspaces with live subscribers in this process."""
        return list(self._feeds)

    def close(self) -> None:
        """The server is shutting down: every subscriber, now or later, ends its stream (its
        client reconnects to another replica) instead of holding the shutdown up."""
        self._closed = True
        for feed in self._feeds.values():
            for subscribers in feed.subscribers.values():
                for subscriber in subscribers:
                    subscriber.close()

    @asynccontextmanager
    async def subscribe(self, workspace_id: str, kind: str) -> AsyncIterator[Subscriber]:
        """Register a subscriber. Every event with seq > ``cursor_at_subscribe`` will be pushed
        to it, so a replay from the log up to its end joins the live feed without a gap."""
        if self._task_group is None:
            raise RuntimeError("the feed is not running")
        feed = self._feeds.get(workspace_id)
        if feed is None:
            feed = self._feeds[workspace_id] = WorkspaceFeed(workspace_id)
            self._task_group.start_soon(self._join, feed)
        subscriber = Subscriber(self.queue_size)
        if self._closed:
            subscriber.close()
        feed.subscribers.setdefault(kind, set()).add(subscriber)
        self._counted(feed, kind)
        try:
            await feed.ready.wait()
            yield subscriber
        finally:
            feed.subscribers[kind].discard(subscriber)
            self._counted(feed, kind)
            if not feed.count() and self._feeds.get(workspace_id) is feed:
                del self._feeds[workspace_id]
                feed.scope.cancel()  # if it is still joining
                if feed.reader is not None:
                    feed.reader.remove(feed)  # its reader's next read leaves it out

    def _counted(self, feed: WorkspaceFeed, kind: str) -> None:
        if kind == self.counted_kind:
            self.on_count(feed.workspace_id, feed.count(kind))

    async def _join(self, feed: WorkspaceFeed) -> None:
        """Start the workspace's cursor at the log's last seq, then add it to a reader with
        room (a new one if none has), and wake that reader so that its read names it."""
        with feed.scope:
            feed.cursor = await self._retrying(lambda: self.eventlog.last_seq(feed.workspace_id))
            tg = self._task_group
            if tg is None:  # shutting down
                return
            reader = next((r for r in self._readers if not r.full), None)
            if reader is None:
                reader = Reader(self.streams_per_read)
                self._readers.append(reader)
                tg.start_soon(self._read, reader)
            reader.add(feed)
            feed.ready.set()
            if not reader.waking:
                reader.waking = True
                tg.start_soon(self._wake, reader)

    async def _read(self, reader: Reader) -> None:
        """The reader's loop, on one connection from the feed's pool, for as long as it has
        workspaces. A Redis error is logged and retried after a growing pause; the connection
        is dropped, and redis-py makes a new one for the next read."""
        pool = self.redis.connection_pool
        connection: AbstractConnection | None = None
        delay = 0.1
        try:
            while reader.feeds:
                try:
                    if connection is None:
                        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
                    reply = await reader.read(connection)
                except (RedisError, OSError) as exc:
                    reader.client_id = None
                    if connection is not None:
                        await connection.disconnect()
                    log.warning("feed.redis_error", error=str(exc), retry_in=delay)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                delay = 0.1
                for stream, entries in stream_replies(reply):
                    feed = reader.feeds.get(stream)
                    if feed is not None:  # else it left while the read was under way
                        self._fan_out(feed, parse_raw_entries(entries))
        finally:
            # No await since the loop saw no workspaces: none can have joined it since.
            reader.running = False
            self._readers.remove(reader)
            if connection is not None:
                with anyio.CancelScope(shield=True):
                    await pool.release(connection)

    async def _wake(self, reader: Reader) -> None:
        """Unblock the reader's read until it has sent one naming every workspace joined.

        CLIENT UNBLOCK (on the request pool: one short command) ends only a read that Redis
        is blocked in. A read that is still on its way to Redis, or whose reply is on its way
        back, is not woken (the unblock answers 0), so the unblock is repeated until the
        reader has sent a read made after the last join: that one names every stream. An
        unblocked read answers as if it timed out, and the next read starts from the same
        cursors, so nothing is lost by it.

        Under an ACL without CLIENT UNBLOCK the wake gives up at once: the read's BLOCK
        timeout then bounds the wait, and the operator is told once why joins are slow.
        """
        delay = WAKE_RETRY_S
        try:
            while reader.running and reader.sent < reader.joined:
                try:
                    if reader.client_id is not None:
                        await self.eventlog.redis.client_unblock(reader.client_id)
                    delay = WAKE_RETRY_S
                except NoPermissionError as exc:
                    if not self._wake_refused:
                        self._wake_refused = True
                        log.warning("feed.wake_refused", error=str(exc), reason=WAKE_REFUSED)
                    return
                except (RedisError, OSError):
                    # Redis is away: the reader reconnects, and its next read names them all.
                    delay = min(delay * 2, 1.0)
                await anyio.sleep(delay)
        finally:
            reader.waking = False

    async def _retrying(self, read: Callable[[], Awaitable[T]]) -> T:
        delay = 0.1
        while True:
            try:
                return await read()
            except (RedisError, OSError, Unavailable) as exc:
                log.warning("feed.redis_error", error=str(exc), retry_in=delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _fan_out(self, feed: WorkspaceFeed, events: list[StoredEvent]) -> None:
        # A read sent before the workspace left and came back reads from an older cursor.
        events = [e for e in events if e.seq > feed.cursor]
        for kind_name, subscribers in feed.subscribers.items():
            kind = self.kinds[kind_name]
            # Encoded once, the same bytes for every subscriber.
            frames = [(e.seq, kind.encode(e)) for e in events if kind.accepts(e.type)]
            if not subscribers or not frames:
                continue
            for subscriber in [s for s in subscribers if not s.push(frames)]:
                subscribers.discard(subscriber)  # cut off: it reconnects and catches up
        if events:
            feed.cursor = events[-1].seq
