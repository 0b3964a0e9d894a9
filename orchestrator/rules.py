"""Rules every domain decision shares: finding things, versions, the status machine, and
settling an entry's lease when it leaves work. Pure functions of the plan."""

from typing import Any, Literal

import msgspec

from orchestrator.errors import Conflict, NotFound
from orchestrator.events import (
    EntryCompleted,
    EntryFailed,
    EntryStatusChanged,
    LeaseReleased,
    LocksReleased,
    PlanDelta,
)
from orchestrator.model import ACTIVE, TRANSITIONS, URGENCY, Entry, Lease, Phase, Plan

replace = msgspec.structs.replace
Outcome = Literal["completed", "failed", "stopped", "revoked"]


def dispatch_order(entry: Entry) -> tuple[int, int]:
    """The executor's order: the most urgent priority first (critical, high, medium, low),
    then the TODO's order (seq)."""
    return URGENCY[entry.priority], entry.seq


def entry_of(plan: Plan, entry_id: str) -> Entry:
    entry = plan.entries.get(entry_id)
    if entry is None:
        raise NotFound(
            f"entry {entry_id} is not in the TODO", {"entryID": entry_id}, code="ENTRY_NOT_FOUND"
        )
    return entry


def phase_of(plan: Plan, phase_id: str) -> Phase:
    phase = plan.phases.get(phase_id)
    if phase is None:
        raise NotFound(f"phase {phase_id} not found", {"phaseID": phase_id}, code="PHASE_NOT_FOUND")
    return phase


def lease_of(plan: Plan, lease_id: str) -> Lease:
    lease = plan.leases.get(lease_id)
    if lease is None:
        raise NotFound(
            f"lease {lease_id} is not held (never granted, or already released or expired)",
            {"leaseID": lease_id},
            code="LEASE_NOT_FOUND",
        )
    return lease


def check_version(kind: str, current: int, given: int | None, ident: str) -> None:
    """A write carrying the version it read is refused once that version is stale."""
    if given is not None and given != current:
        raise Conflict(
            f"{kind} {ident} is at version {current}, not {given}; read it again and retry",
            {"expected": given, "current": current},
            code="STALE_VERSION",
        )


def bump(entry: Entry, now: int, **changes: Any) -> Entry:
    """The entry with ``changes``, one version on."""
    return replace(entry, **changes, version=entry.version + 1, updated_at=now)


def check_transition(entry: Entry, to: str) -> None:
    if to not in TRANSITIONS[entry.status]:
        allowed = sorted(TRANSITIONS[entry.status])
        raise Conflict(
            f"entry {entry.id} cannot go from {entry.status} to {to}"
            + (f" (allowed: {', '.join(allowed)})" if allowed else f" ({entry.status} is final)"),
            {"from": entry.status, "to": to, "allowed": allowed},
            code="ILLEGAL_TRANSITION",
        )


def held_files(plan: Plan, lease: Lease) -> list[str]:
    """The lease's files that it still holds the lock of."""
    return [f for f in lease.files if (lock := plan.locks.get(f)) and lock.leaseID == lease.id]


def unlock(plan: Plan, lease: Lease, reason: str) -> list[PlanDelta]:
    """Release the file locks a lease holds (nothing when it holds none)."""
    held = held_files(plan, lease)
    if not held:
        return []
    return [
        LocksReleased(
            leaseID=lease.id,
            entryID=lease.entryID,
            sessionID=lease.sessionID,
            files=held,
            reason=reason,
            unlocked=held,
        )
    ]


def release(plan: Plan, entry: Entry, outcome: Outcome, reason: str) -> list[PlanDelta]:
    """End the lease an entry is worked under, with its file locks."""
    lease = next((x for x in plan.leases.values() if x.entryID == entry.id), None)
    if lease is None:
        return []
    events = unlock(plan, lease, reason)
    events.append(
        LeaseReleased(
            leaseID=lease.id,
            entryID=lease.entryID,
            sessionID=lease.sessionID,
            outcome=outcome,
            ended=[lease.id],
        )
    )
    return events


def move(
    plan: Plan,
    entry: Entry,
    to: str,
    now: int,
    reason: str | None = None,
    **changes: Any,
) -> tuple[Entry, list[PlanDelta]]:
    """Move ``entry`` to ``to`` by the status machine, ending its lease when it leaves work.

    Returns the entry after the move and the events that say so.
    """
    check_transition(entry, to)
    if to not in ACTIVE:
        changes.setdefault("assigned_to", None)
    moved = bump(entry, now, status=to, **changes)
    events: list[PlanDelta] = []
    if entry.status in ACTIVE and to not in ACTIVE:
        events += release(plan, entry, _outcome(to), reason or to)
    if to == "completed":
        events.append(
            EntryCompleted(entryID=entry.id, sessionID=entry.assigned_to, entries=[moved])
        )
    elif to == "failed":
        events.append(EntryFailed(entryID=entry.id, reason=reason or "failed", entries=[moved]))
    else:
        events.append(
            EntryStatusChanged(
                entryID=entry.id, from_=entry.status, to=to, reason=reason, entries=[moved]
            )
        )
    return moved, events


def _outcome(to: str) -> Outcome:
    outcomes: dict[str, Outcome] = {
        "completed": "completed",
        "failed": "failed",
        "pending": "stopped",
    }
    return outcomes.get(to, "revoked")
