"""The tool-call log read model and its queries.

Every call is stored once (hash ``log:calls``, by zero-padded seq) and indexed by its
timestamp: in a sorted set over all calls, one per value of each filter field, and one per
(status, tool) pair, the combination whose plain indexes are the largest. The callID, which
nearly always names one call, is indexed by a hash (callID -> seq) instead: a sorted set per
call would be a new key per call. A callID that comes again gets a sorted set like any other
value (apply.lua's CALLIDS). A query reads one index, or intersects the indexes of its
filters, and pages by rank.

An intersection costs O(smallest index x filters). When the smallest index holds
``KEEP_FROM`` calls or more, the intersection is kept (a disposable cache key, ``KEEP_MS``
after its last use) and brought up to date by the next query with just the calls projected
since, so that repeated queries cost O(log N + limit + calls since), not O(N).
"""

import hashlib
import math
from collections.abc import AsyncIterator

import msgspec
from redis.asyncio import Redis

from orchestrator.events import OrchestrationPurged, StoredEvent, ToolCall
from orchestrator.keys import LOG_FILTER_FIELDS, WorkspaceKeys
from orchestrator.replies import as_bytes
from orchestrator.scripts import Script
from projections.base import Command, Word

LOG_PAGE = Script.load("log_page", package="projections.lua")
KEEP_FROM = 1024  # smallest index size from which an intersection is kept
KEEP_MS = 300_000  # how long a kept intersection outlives its last use

# The filter fields with a sorted set per value (all but callID), tool and status first.
SORTED_FIELDS = tuple(f for f in LOG_FILTER_FIELDS if f != "callID")
assert SORTED_FIELDS[:2] == ("tool", "status")

# What the indexes need of a stored ToolCall: decoding only this skips the rest of the call
# (it was validated when it was recorded).
_Indexed = msgspec.defstruct(
    "IndexedCall",
    [("timestamp", int), ("callID", str), *((f, str | None, None) for f in SORTED_FIELDS)],
)
_decode_indexed = msgspec.json.Decoder(_Indexed).decode


def member(seq: int) -> str:
    # Zero-padded so that calls with equal timestamps sort by seq.
    return f"{seq:016d}"


class LogProjection:
    name = "log"

    def apply(self, keys: WorkspaceKeys, event: StoredEvent) -> list[Command]:
        if event.type == ToolCall.type:
            return self._record(keys, event)
        if event.type == OrchestrationPurged.type:
            return self.drop(keys)
        return []

    def _record(self, keys: WorkspaceKeys, event: StoredEvent) -> list[Command]:
        timestamp, call_id, *values = msgspec.structs.astuple(_decode_indexed(event.payload))
        m = member(event.seq)
        indexes = [
            keys.log_index(field, value)
            for field, value in zip(SORTED_FIELDS, values, strict=True)
            if value is not None
        ]
        indexes.append(keys.log_status_tool(values[1], values[0]))
        return [
            ("HSET", keys.log_calls, m, bytes(event.payload)),
            ("ZADD", keys.log_all, timestamp, m),
            *[("ZADD", index, timestamp, m) for index in indexes],
            ("SADD", keys.log_indexes, *indexes),
            (*_call_ids_header(keys), call_id, m, timestamp),
        ]

    def apply_batch(self, keys: WorkspaceKeys, events: list[StoredEvent]) -> list[Command]:
        """The writes of ``apply`` for each event, already merged per key, as the runner
        would merge them: one HSET, one ZADD per index, one SADD and one CALLIDS for the
        batch's calls.

        Tool calls are most of any log, and building then merging ~10 commands per call cost
        the projector more than anything else."""
        writes: list[Command] = []
        batch = _Batch(keys)
        for event in events:
            if event.type == ToolCall.type:
                batch.add(event)
            elif event.type == OrchestrationPurged.type:
                writes += batch.writes()
                writes += self.drop(keys)
                batch = _Batch(keys)
        return writes + batch.writes()

    def drop(self, keys: WorkspaceKeys) -> list[Command]:
        return [
            ("DELMEMBERS", keys.log_indexes),
            ("DEL", keys.log_calls, keys.log_all, keys.log_call_ids),
        ]


class _Batch:
    """The log writes of consecutive tool calls, merged per key as they are added."""

    def __init__(self, keys: WorkspaceKeys) -> None:
        self.keys = keys
        self.calls: list[Word] = []  # padded seq, ToolCall JSON, ...
        self.all: list[Word] = []  # timestamp, padded seq, ...
        self.indexes: dict[str, list[Word]] = {}  # index key -> timestamp, padded seq, ...
        self.index_keys: list[dict[str, str]] = [{} for _ in SORTED_FIELDS]  # by value
        self.pair_keys: dict[tuple[str, str], str] = {}  # (status, tool) -> its index
        self.call_ids: list[Word] = []  # callID, padded seq, timestamp, ...

    def add(self, event: StoredEvent) -> None:
        ts, call_id, *values = msgspec.structs.astuple(_decode_indexed(event.payload))
        # As text: Redis's Lua would print each number it is handed, once per index.
        timestamp = str(ts)
        m = member(event.seq)
        self.calls += (m, bytes(event.payload))
        self.all += (timestamp, m)
        for field, value, known in zip(SORTED_FIELDS, values, self.index_keys, strict=True):
            if value is None:
                continue
            index = known.get(value)
            if index is None:
                index = known[value] = self.keys.log_index(field, value)
            self._index(index, timestamp, m)
        pair = (values[1], values[0])
        index = self.pair_keys.get(pair)
        if index is None:
            index = self.pair_keys[pair] = self.keys.log_status_tool(*pair)
        self._index(index, timestamp, m)
        self.call_ids += (call_id, m, timestamp)

    def _index(self, index: str, timestamp: str, m: str) -> None:
        pairs = self.indexes.get(index)
        if pairs is None:
            self.indexes[index] = [timestamp, m]
        else:
            pairs += (timestamp, m)

    def writes(self) -> list[Command]:
        if not self.calls:
            return []
        return [
            ("HSET", self.keys.log_calls, *self.calls),
            ("ZADD", self.keys.log_all, *self.all),
            *[("ZADD", index, *pairs) for index, pairs in self.indexes.items()],
            ("SADD", self.keys.log_indexes, *self.indexes),
            (*_call_ids_header(self.keys), *self.call_ids),
        ]


def _call_ids_header(keys: WorkspaceKeys) -> Command:
    """apply.lua's CALLIDS, before its (callID, seq, timestamp) triples."""
    return (
        "CALLIDS",
        keys.log_call_ids,
        keys.log_all,
        keys.log_indexes,
        keys.log_index("callID", ""),
    )


class LogQuery(msgspec.Struct, frozen=True, kw_only=True):
    filters: dict[str, str] = msgspec.field(default_factory=dict)
    from_ms: int | None = None
    to_ms: int | None = None
    page: int = 1
    limit: int = 50
    descending: bool = False


class LogPage(msgspec.Struct, frozen=True):
    items: list[bytes]  # ToolCall JSON, as stored
    page: int
    limit: int
    total: int

    @property
    def pages(self) -> int:
        return math.ceil(self.total / self.limit)


async def query_log(
    redis: Redis, workspace_id: str, query: LogQuery, *, keep_from: int = KEEP_FROM
) -> LogPage:
    """One page of matching calls and their total; ``keep_from``: see ``KEEP_FROM``."""
    keys = WorkspaceKeys(workspace_id)
    filters = dict(query.filters)
    call_id = filters.pop("callID", "")
    indexes = []
    if "status" in filters and "tool" in filters:
        indexes.append(keys.log_status_tool(filters.pop("status"), filters.pop("tool")))
    indexes += [keys.log_index(f, v) for f, v in sorted(filters.items())]
    digest = hashlib.blake2b(msgspec.json.encode(sorted(query.filters.items())), digest_size=16)
    intersection = f"{keys.caches}:log:{digest.hexdigest()}"
    calls_of_id = [keys.log_call_ids, f"{intersection}:call", keys.log_index("callID", call_id)]
    args = [
        "-inf" if query.from_ms is None else query.from_ms,
        "+inf" if query.to_ms is None else query.to_ms,
        (query.page - 1) * query.limit,
        query.limit,
        "desc" if query.descending else "asc",
        LogProjection.name,
        keep_from,
        KEEP_MS,
        call_id,
    ]
    bookkeeping = [intersection, f"{intersection}:meta", keys.checkpoints, keys.log_all]
    all_keys = [keys.log_calls, *bookkeeping, *calls_of_id, *indexes]
    total, items = await LOG_PAGE(redis, all_keys, args)
    return LogPage([bytes(i) for i in items if i is not None], query.page, query.limit, int(total))


async def iter_calls(
    redis: Redis, workspace_id: str, batch: int = 1000
) -> AsyncIterator[list[bytes]]:
    """Every recorded call as stored JSON, in timestamp order, a batch at a time."""
    keys = WorkspaceKeys(workspace_id)
    start = 0
    while True:
        members = await redis.zrange(keys.log_all, start, start + batch - 1)
        if not members:
            return
        raws = await redis.hmget(keys.log_calls, [as_bytes(m) for m in members])
        yield [as_bytes(r) for r in raws if r is not None]
        start += batch
