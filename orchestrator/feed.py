"""Live delivery: one Redis reader per active workspace, fanned out to local subscribers.

A subscriber never holds a Redis connection: the workspace's reader task does the blocking
XREAD and pushes each event, encoded once per stream kind, into every subscriber's bounded
queue. A subscriber whose queue fills is cut off (it reconnects from its last seq and catches
up from the log), so nobody's slowness stalls anyone else.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orchestrator.errors import Unavailable
from orchestrator.eventlog import EventLog, parse_entries
from orchestrator.events import StoredEvent
from orchestrator.keys import WorkspaceKeys
from orchestrator.replies import stream_entries

log = structlog.get_logger(__name__)

T = TypeVar("T")
Frame = tuple[int, bytes]  # (seq, encoded bytes)
XREAD_BLOCK_MS = 5000
XREAD_COUNT = 1000


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
    cursor: int = 0
    subscribers: dict[str, set[Subscriber]] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def count(self, kind: str | None = None) -> int:
        if kind is not None:
            return len(self.subscribers.get(kind, ()))
        return sum(len(s) for s in self.subscribers.values())


class Feed:
    def __init__(
        self,
        blocking_redis: Redis,
        eventlog: EventLog,
        kinds: list[StreamKind],
        queue_size: int,
        on_count: Callable[[str, int], None] = lambda ws, n: None,
        counted_kind: str = "events",
    ) -> None:
        self.redis = blocking_redis
        self.eventlog = eventlog
        self.kinds = {k.name: k for k in kinds}
        self.queue_size = queue_size
        self.on_count = on_count
        self.counted_kind = counted_kind
        self._feeds: dict[str, WorkspaceFeed] = {}
        self._task_group: TaskGroup | None = None
        self._closed = False

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
            self._task_group.start_soon(self._read, feed)
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
                feed.scope.cancel()

    def _counted(self, feed: WorkspaceFeed, kind: str) -> None:
        if kind == self.counted_kind:
            self.on_count(feed.workspace_id, feed.count(kind))

    async def _read(self, feed: WorkspaceFeed) -> None:
        stream = WorkspaceKeys(feed.workspace_id).events
        with feed.scope:
            feed.cursor = await self._retrying(lambda: self.eventlog.last_seq(feed.workspace_id))
            feed.ready.set()
            while True:
                reply = await self._retrying(
                    lambda: self.redis.xread(
                        {stream: f"{feed.cursor}-0"}, count=XREAD_COUNT, block=XREAD_BLOCK_MS
                    )
                )
                for _, entries in reply or ():  # type: ignore[str-unpack]
                    self._fan_out(feed, parse_entries(stream_entries(entries)))

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
