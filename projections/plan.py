"""The plan read model: the Master TODO, phases, executor, leases, locks and budget.

Every domain event carries the state of what it changed, so ``apply`` only stores it: the
same changes ``orchestrator.plan.evolve`` folds in memory.
"""

from typing import Any

import msgspec
from redis.asyncio import Redis

from orchestrator.events import (
    DOMAIN_TYPES,
    MemoryAdded,
    OrchestrationPurged,
    PlanDelta,
    StoredEvent,
    ToolCall,
)
from orchestrator.keys import WorkspaceKeys
from orchestrator.model import (
    BudgetCaps,
    Entry,
    ExecutorState,
    FileLock,
    Lease,
    MemoryNote,
    Phase,
    Plan,
    TodoMeta,
    Usage,
)
from orchestrator.replies import as_bytes, as_str
from orchestrator.upcast import current
from projections.base import Command

_encode = msgspec.json.encode
RELEVANT = DOMAIN_TYPES | {OrchestrationPurged.type}
TODO_EVENTS_KEPT = 100_000


class PlanProjection:
    name = "plan"

    def apply(self, keys: WorkspaceKeys, event: StoredEvent) -> list[Command]:
        if event.type == ToolCall.type:
            # The max_tool_calls cap counts calls since the last purge.
            return [("HINCRBY", keys.plan, "tool_calls", 1)]
        if event.type not in RELEVANT:
            return []  # decided on the type alone
        payload = event.decode()
        if isinstance(payload, OrchestrationPurged):
            writes = self.drop(keys)
            if payload.executor is not None:
                writes.append(("HSET", keys.plan, "executor", _encode(payload.executor)))
            return writes
        assert isinstance(payload, PlanDelta)
        writes = _delta_writes(keys, payload)
        writes.append(("HSET", keys.plan, "version", event.seq))
        if isinstance(payload, MemoryAdded):
            memory = keys.phase_memory(payload.phaseID)
            writes.append(("RPUSH", memory, *(_encode(n) for n in payload.notes)))
            writes.append(("SADD", keys.phase_memories, memory))
        if event.type.startswith("todo."):
            frame = b'{"seq":%d,"type":"%s","payload":%s}' % (
                event.seq,
                event.type.encode(),
                event.current_payload(),
            )
            writes.append(("ZADD", keys.todo_events, event.seq, frame))
            # Keep the newest TODO_EVENTS_KEPT: the TODO's log must not grow without bound.
            writes.append(("ZREMRANGEBYRANK", keys.todo_events, 0, -TODO_EVENTS_KEPT - 1))
        return writes

    def apply_batch(self, keys: WorkspaceKeys, events: list[StoredEvent]) -> list[Command]:
        """The writes of ``apply`` for each event, a run of tool calls counted by one
        HINCRBY: a log is mostly tool calls, and folding them one at a time (a command each,
        merged afterwards) took ~10% of the server's CPU under batch ingestion (py-spy). The
        plan's own events are few, and their writes barely merge (each trims the TODO's log)."""
        writes: list[Command] = []
        calls = 0
        for event in events:
            if event.type == ToolCall.type:
                calls += 1
                continue
            if calls:
                writes.append(("HINCRBY", keys.plan, "tool_calls", calls))
                calls = 0
            writes += self.apply(keys, event)
        if calls:
            writes.append(("HINCRBY", keys.plan, "tool_calls", calls))
        return writes

    def drop(self, keys: WorkspaceKeys) -> list[Command]:
        return [
            ("DEL", keys.plan, keys.entries, keys.todo_events, keys.phases),
            ("DEL", keys.leases, keys.locks),
            ("DELMEMBERS", keys.phase_memories),
        ]


def _delta_writes(keys: WorkspaceKeys, delta: PlanDelta) -> list[Command]:
    writes: list[Command] = []

    def put(key: str, items: dict[str, Any]) -> None:
        if items:
            writes.append(("HSET", key, *(w for k, v in items.items() for w in (k, _encode(v)))))

    def delete(key: str, fields: list[str]) -> None:
        if fields:
            writes.append(("HDEL", key, *fields))

    put(keys.entries, {e.id: e for e in delta.entries})
    delete(keys.entries, delta.deleted)
    put(keys.phases, {p.id: p for p in delta.phases})
    put(keys.leases, {lease.id: lease for lease in delta.leases})
    delete(keys.leases, delta.ended)
    put(keys.locks, {lock.file: lock for lock in delta.locks})
    delete(keys.locks, delta.unlocked)
    singletons = {
        "todo": delta.todo,
        "caps": delta.caps,
        "usage": delta.usage,
        "executor": delta.executor,
    }
    put(keys.plan, {k: v for k, v in singletons.items() if v is not None})
    return writes


def _decode_all(raw: dict[Any, Any], type_: type[Any]) -> dict[str, Any]:
    # A read model built by an earlier version holds its shapes until it is rebuilt.
    decoder = msgspec.json.Decoder(type_)
    return {as_str(k): decoder.decode(current(as_bytes(v))) for k, v in raw.items()}


async def read_plan(redis: Redis, workspace_id: str) -> Plan:
    """The plan as one consistent snapshot (MULTI/EXEC: no apply lands between the reads)."""
    keys = WorkspaceKeys(workspace_id)
    pipe = redis.pipeline(transaction=True)
    pipe.hgetall(keys.plan)
    pipe.hgetall(keys.entries)
    pipe.hgetall(keys.phases)
    pipe.hgetall(keys.leases)
    pipe.hgetall(keys.locks)
    state, entries, phases, leases, locks = await pipe.execute()
    state = {as_str(k): v for k, v in state.items()}

    def one(name: str, type_: type[Any], default: Any) -> Any:
        raw = state.get(name)
        return default if raw is None else msgspec.json.decode(raw, type=type_)

    return Plan(
        version=int(state.get("version", 0)),
        todo=one("todo", TodoMeta, None),
        entries=_decode_all(entries, Entry),
        phases=_decode_all(phases, Phase),
        leases=_decode_all(leases, Lease),
        locks=_decode_all(locks, FileLock),
        caps=one("caps", BudgetCaps, BudgetCaps()),
        usage=one("usage", Usage, Usage()),
        executor=one("executor", ExecutorState, ExecutorState()),
        tool_calls=int(state.get("tool_calls", 0)),
    )


async def read_memory(redis: Redis, workspace_id: str, phase_id: str) -> list[MemoryNote]:
    raw = await redis.lrange(WorkspaceKeys(workspace_id).phase_memory(phase_id), 0, -1)
    decoder = msgspec.json.Decoder(MemoryNote)
    return [decoder.decode(r) for r in raw]


async def read_todo_events(
    redis: Redis, workspace_id: str, after_seq: int, limit: int
) -> list[bytes]:
    """The TODO's own events with seq > ``after_seq``, as ``{seq,type,payload}`` JSON."""
    key = WorkspaceKeys(workspace_id).todo_events
    raw = await redis.zrangebyscore(key, f"({after_seq}", "+inf", start=0, num=limit)
    return [current(as_bytes(r)) for r in raw]
