"""The event log: one Redis Stream per workspace, entry id ``<seq>-0``.

Appends go through one Lua script (allocate seq, check versions and idempotency, XADD).
Concurrent appends are group-committed: while one round trip is in flight the next requests
queue up, and the batcher sends them all in the following one: one script call per
workspace, which runs that workspace's appends in order and answers each on its own.
"""

import asyncio
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from orchestrator import scripts
from orchestrator.errors import Conflict, Unavailable, ValidationFailed
from orchestrator.events import NewEvent, StoredEvent
from orchestrator.keys import WorkspaceKeys
from orchestrator.replies import Entry, as_bytes, as_int, as_str, stream_entries

MAX_PIPELINE = 256
# A read of up to this many entries is one plain XRANGE, the fastest read: at worst it fetches
# this many large events to keep one. A longer read goes through read_bounded.lua, which
# reads in chunks of this many inside Redis and stops at the byte budget (a third as fast).
PLAIN_READ = 32
READ_BOUNDED = scripts.Script.load("read_bounded")


class Appended(msgspec.Struct, frozen=True):
    first_seq: int
    count: int
    result: bytes  # what the command stored with its idempotency key
    duplicate: bool = False

    @property
    def seqs(self) -> list[int]:
        return list(range(self.first_seq, self.first_seq + self.count))

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1


class VersionConflict(Conflict):
    """An expected version no longer holds; ``current`` is the entity's version now."""

    def __init__(self, entity: str, current: int) -> None:
        super().__init__(
            f"{entity} was changed concurrently (now at version {current}); retry",
            {"entity": entity, "current_version": current},
            code="VERSION_CONFLICT",
        )
        self.entity = entity
        self.current = current


class KeyReused(ValidationFailed):
    def __init__(self) -> None:
        super().__init__(
            "Idempotency-Key was already used for a different request; use a new key",
            code="IDEMPOTENCY_KEY_REUSED",
        )


class Idempotency(msgspec.Struct, frozen=True):
    operation: str
    key: str
    fingerprint: str


@contextmanager
def unavailable() -> Iterator[None]:
    """Redis failures surface as the domain's retryable ``Unavailable``."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise Unavailable(f"event log unavailable: {exc}") from exc


RawEntry = tuple[bytes, tuple[bytes, bytes]]  # (entry id, (type, payload))


def raw_fields(fields: list[bytes]) -> tuple[bytes, bytes]:
    """(type, payload) from an entry's flat field list, in the order append.lua writes them."""
    if fields[0] == b"type" and fields[2] == b"payload":
        return fields[1], fields[3]
    named = dict(zip(fields[::2], fields[1::2], strict=True))
    return named[b"type"], named[b"payload"]


def entry_seq(entry: RawEntry) -> int:
    return int(entry[0][:-2])


def fitting(entries: list[RawEntry], budget: int) -> int:
    """How many of the entries, from the first, make up a batch of at most ``budget`` bytes
    of type and payload (the first always, however large), as read_bounded.lua counts."""
    size = 0
    for n, (_, (type_, payload)) in enumerate(entries):
        size += len(type_) + len(payload)
        if size > budget:
            return max(n, 1)
    return len(entries)


def stored_event(entry_id: bytes, type_: bytes, payload: bytes) -> StoredEvent:
    return StoredEvent(int(entry_id.split(b"-", 1)[0]), type_.decode(), msgspec.Raw(payload))


def parse_entries(entries: Iterable[Entry]) -> list[StoredEvent]:
    """Events from entries whose fields redis-py made into a dict (XRANGE's reply)."""
    return [stored_event(i, fields[b"type"], fields[b"payload"]) for i, fields in entries]


def parse_raw_entries(entries: Iterable[tuple[bytes, list[bytes]]]) -> list[StoredEvent]:
    """Events from entries whose fields are a flat list, as on the wire (a raw XREAD reply)."""
    return [stored_event(i, *raw_fields(fields)) for i, fields in entries]


class _Append(msgspec.Struct, frozen=True):
    """One append, as append.lua takes it."""

    keys: WorkspaceKeys
    idempotency_key: str  # "" for none
    args: list[Any]


def _call(appends: list[_Append]) -> scripts.Call:
    """One call of append.lua for appends to the same workspace."""
    keys = appends[0].keys
    args: list[Any] = [len(appends)]
    for append in appends:
        args += [len(append.args), *append.args]
    idempotency_keys = [a.idempotency_key for a in appends]
    return (scripts.APPEND, [keys.events, keys.meta, keys.versions, *idempotency_keys], args)


def _replies(reply: Any, count: int) -> list[Any]:
    """Each append's reply from one call's: a failed call fails them all; an append that
    failed inside the script (``{"error", message}``) fails alone."""
    if isinstance(reply, Exception):
        return [reply] * count
    return [ResponseError(as_str(r[1])) if r[0] == b"error" else r for r in reply]


class EventLog:
    def __init__(self, redis: Redis, retention: int, idempotency_ttl_ms: int) -> None:
        self.redis = redis
        self._retention = retention
        self._idempotency_ttl_ms = idempotency_ttl_ms
        self._pending: list[tuple[_Append, asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._batching = False
        self._listeners: list[Callable[[str, int], None]] = []
        self.appended = 0  # events this process appended (for /metrics)
        # The same pool, with XRANGE replies left as lists rather than made into dicts.
        self._raw = Redis(connection_pool=redis.connection_pool)
        self._raw.set_response_callback("XRANGE", lambda response, **options: response)

    def on_append(self, listener: Callable[[str, int], None]) -> None:
        """Call ``listener(workspace_id, last_seq)`` after every append by this process."""
        self._listeners.append(listener)

    async def append(
        self,
        workspace_id: str,
        events: Sequence[NewEvent],
        *,
        expect: Mapping[str, int] | None = None,
        idempotency: Idempotency | None = None,
        result: bytes = b"",
        purge: bool = False,
    ) -> Appended:
        """Append ``events`` atomically, or nothing at all.

        ``expect`` maps entity -> version the command read (0: must not exist yet).
        A repeated ``idempotency`` key returns the first append, with ``duplicate`` set.
        """
        keys = WorkspaceKeys(workspace_id)
        idem_key = keys.idempotency(idempotency.operation, idempotency.key) if idempotency else ""
        args: list[Any] = [
            idempotency.fingerprint if idempotency else "",
            self._idempotency_ttl_ms,
            result,
            self._retention,
            "1" if purge else "0",
            len(expect or {}),
        ]
        for entity, version in (expect or {}).items():
            args += [entity, str(version)]
        args.append(len(events))
        for event in events:
            args += [event.type, event.payload, " ".join(event.entities)]
        reply = await self._submit(_Append(keys, idem_key, args))
        appended = self._appended(reply, result)
        if not appended.duplicate:
            self.appended += appended.count
            for listener in self._listeners:
                listener(workspace_id, appended.last_seq)
        return appended

    @staticmethod
    def _appended(reply: Any, result: bytes) -> Appended:
        if isinstance(reply, RedisError | OSError):
            raise Unavailable(f"event log unavailable: {reply}") from reply
        status = reply[0]
        if status == b"ok":
            return Appended(first_seq=int(reply[1]), count=int(reply[2]), result=result)
        if status == b"dup":
            return Appended(int(reply[1]), int(reply[2]), bytes(reply[3]), duplicate=True)
        if status == b"conflict":
            raise VersionConflict(reply[1].decode(), int(reply[2]))
        raise KeyReused()

    async def _submit(self, append: _Append) -> Any:
        if not self._batching:
            try:
                [replies] = await scripts.run_all(self.redis, [_call([append])])
            except (RedisError, OSError) as exc:
                raise Unavailable(f"event log unavailable: {exc}") from exc
            return _replies(replies, 1)[0]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((append, future))
        self._wakeup.set()
        return await future

    async def run_batcher(self) -> None:
        """Group commit: send every queued append in one round trip, as long as this runs."""
        self._batching = True
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending:
                    batch = self._pending[:MAX_PIPELINE]
                    del self._pending[:MAX_PIPELINE]
                    await self._flush(batch)
        finally:
            self._batching = False
            for _, future in self._pending:
                future.set_result(RedisError("shutting down"))
            self._pending.clear()

    async def _flush(self, batch: list[tuple[_Append, asyncio.Future[Any]]]) -> None:
        groups: dict[str, list[tuple[_Append, asyncio.Future[Any]]]] = {}
        for queued in batch:  # by workspace, each in the order its appends came
            groups.setdefault(queued[0].keys.events, []).append(queued)
        calls = [_call([append for append, _ in group]) for group in groups.values()]
        try:
            replies = await scripts.run_all(self.redis, calls)
        except (RedisError, OSError) as exc:
            replies = [exc] * len(calls)
        except BaseException:
            # Shutting down mid-flight: whether these landed is unknown; their callers get a
            # retryable error (an Idempotency-Key retry is then safe), never a hang.
            for _, future in batch:
                if not future.done():
                    future.set_result(RedisError("shutting down"))
            raise
        for group, reply in zip(groups.values(), replies, strict=True):
            for (_, future), one in zip(group, _replies(reply, len(group)), strict=True):
                if not future.done():
                    future.set_result(one)

    async def recall(self, workspace_id: str, idempotency: Idempotency | None) -> Appended | None:
        """The earlier append made with this idempotency key, if any.

        Commands that decide on state check this first: a retry of an answer must return the
        first result, not fail because the question is no longer pending.
        """
        if idempotency is None:
            return None
        key = WorkspaceKeys(workspace_id).idempotency(idempotency.operation, idempotency.key)
        fields = ["fingerprint", "first", "n", "result"]
        with unavailable():
            fingerprint, first, count, result = await self.redis.hmget(key, fields)
        if fingerprint is None:
            return None
        if as_str(fingerprint) != idempotency.fingerprint:
            raise KeyReused()
        return Appended(as_int(first), as_int(count), as_bytes(result), duplicate=True)

    # Reads

    async def read(self, workspace_id: str, after_seq: int, count: int) -> list[StoredEvent]:
        """Up to ``count`` retained events with seq > ``after_seq``, in order."""
        keys = WorkspaceKeys(workspace_id)
        with unavailable():
            entries = await self.redis.xrange(keys.events, min=f"{after_seq + 1}-0", count=count)
        return parse_entries(stream_entries(entries))

    async def read_raw(self, workspace_id: str, after_seq: int, count: int) -> list[RawEntry]:
        """Like ``read``, as ``(entry id, (type, payload))`` straight off the wire: the replay
        path, where building an object per event cost more than framing it."""
        keys = WorkspaceKeys(workspace_id)
        with unavailable():
            reply: Any = await self._raw.xrange(keys.events, min=f"{after_seq + 1}-0", count=count)
        return [(entry_id, raw_fields(fields)) for entry_id, fields in reply or ()]

    async def read_batch(
        self, workspace_id: str, after_seq: int, count: int, budget: int
    ) -> tuple[list[RawEntry], bool]:
        """Like ``read_raw``, stopping also at ``budget`` bytes of type and payload (the first
        event always, however large); and whether the budget stopped it before the log's end.

        XRANGE has no byte limit, so a long read goes through read_bounded.lua: what a read
        fetches, into Redis's reply and this process, is at most ``PLAIN_READ`` events or
        about ``budget`` bytes (one event more at most), however the events' sizes change.
        """
        if count <= PLAIN_READ:
            entries = await self.read_raw(workspace_id, after_seq, count)
            fitted = fitting(entries, budget)
            return entries[:fitted], fitted < len(entries)
        keys = WorkspaceKeys(workspace_id)
        args = [f"{after_seq + 1}-0", count, budget, PLAIN_READ]
        with unavailable():
            reply = await READ_BOUNDED(self.redis, [keys.events], args)
        ids, types, payloads = reply[1::3], reply[2::3], reply[3::3]
        return list(zip(ids, zip(types, payloads, strict=True), strict=True)), reply[0] == 1

    async def last_seq(self, workspace_id: str) -> int:
        """The last seq ever allocated in the workspace (0 for a new one)."""
        with unavailable():
            raw = await self.redis.hget(WorkspaceKeys(workspace_id).meta, "seq")
        return int(raw or 0)

    async def bounds(self, workspace_id: str) -> tuple[int, int]:
        """(first retained seq, last allocated seq); first is last + 1 when nothing is retained."""
        keys = WorkspaceKeys(workspace_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xrange(keys.events, count=1)
        pipe.hget(keys.meta, "seq")
        with unavailable():
            head, raw_last = await pipe.execute()
        last = int(raw_last or 0)
        first = parse_entries(head)[0].seq if head else last + 1
        return first, last

    async def versions(self, workspace_id: str, *entities: str) -> list[int]:
        keys = WorkspaceKeys(workspace_id)
        with unavailable():
            raw = await self.redis.hmget(keys.versions, list(entities))
        return [int(v or 0) for v in raw]
