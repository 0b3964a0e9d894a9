"""Folding domain events into the plan, and the command step that decides on it.

``evolve`` is the pure fold: the projection in ``projections.plan`` writes the same changes
to Redis, and the state-machine tests fold the log in memory with it to check that replaying
the log rebuilds the state the commands saw.
"""

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import msgspec

from orchestrator.events import (
    DOMAIN_TYPES,
    OrchestrationPurged,
    Payload,
    PlanDelta,
    StoredEvent,
)
from orchestrator.model import ExecutorState, Plan


class Decision(NamedTuple):
    """What a command decided: the events to append (all or none) and what to answer."""

    events: list[Any]
    result: Any = None


Decide = Callable[[Plan], Decision]


def evolve(plan: Plan, payload: Payload | None, seq: int) -> Plan:
    """The plan after the event at ``seq``."""
    if isinstance(payload, OrchestrationPurged):
        return Plan(executor=payload.executor or ExecutorState())
    if not isinstance(payload, PlanDelta):
        return plan
    entries = {**plan.entries, **{e.id: e for e in payload.entries}}
    for entry_id in payload.deleted:
        entries.pop(entry_id, None)
    leases = {**plan.leases, **{lease.id: lease for lease in payload.leases}}
    for lease_id in payload.ended:
        leases.pop(lease_id, None)
    locks = {**plan.locks, **{lock.file: lock for lock in payload.locks}}
    for file in payload.unlocked:
        locks.pop(file, None)
    return Plan(
        version=seq,
        todo=payload.todo or plan.todo,
        entries=entries,
        phases={**plan.phases, **{p.id: p for p in payload.phases}},
        leases=leases,
        locks=locks,
        caps=payload.caps or plan.caps,
        usage=payload.usage or plan.usage,
        executor=payload.executor or plan.executor,
        tool_calls=plan.tool_calls,
    )


def fold(events: Iterable[StoredEvent], plan: Plan | None = None) -> Plan:
    """The plan that replaying ``events`` builds."""
    state = plan or Plan()
    for event in events:
        if event.type in DOMAIN_TYPES or event.type == OrchestrationPurged.type:
            state = evolve(state, event.decode(), event.seq)
    return state


def same_state(a: Plan, b: Plan) -> bool:
    """Equal as stored (``tool_calls`` comes from the log read model, not the fold). Keys
    sorted: a read model's hashes come back in Redis's order, not the order of the events."""
    strip = msgspec.structs.replace
    encode = msgspec.json.encode
    return encode(strip(a, tool_calls=0), order="sorted") == encode(
        strip(b, tool_calls=0), order="sorted"
    )
