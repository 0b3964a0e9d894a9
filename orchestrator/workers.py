"""Workers: agent sessions that claim dispatched entries, heartbeat, and finish them.

A claim leases the best dispatched entry to the session and locks its files; heartbeats
renew both; complete and fail end them. A lease that misses its heartbeat is expired by the
dispatcher (``orchestrator.executor.expire``). Pure decisions on the plan.
"""

from typing import Annotated, Any

import msgspec

from orchestrator import results as r
from orchestrator.errors import Conflict
from orchestrator.events import (
    EntryStarted,
    LeaseGranted,
    LeaseRenewed,
    LocksAcquired,
    SessionID,
)
from orchestrator.executor import Limits, retry_or_fail
from orchestrator.ids import mint
from orchestrator.model import Check, FileLock, Lease, Plan
from orchestrator.plan import Decision
from orchestrator.rules import bump, dispatch_order, entry_of, lease_of, move, replace


class ClaimInput(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    sessionID: SessionID


class CompleteInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    summary: Annotated[str, msgspec.Meta(max_length=16_384)] | None = None
    report: Annotated[list[Check], msgspec.Meta(max_length=64)] = msgspec.field(
        default_factory=list
    )


class FailInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] = "failed by worker"
    retry: bool = True  # count an attempt and retry while attempts remain; false: fail now


def _lease_view(lease: Lease) -> r.LeaseView:
    return r.LeaseView(
        id=lease.id, entryID=lease.entryID, sessionID=lease.sessionID, expires_at=lease.expires_at
    )


def decide_claim(plan: Plan, session_id: str, now: int, limits: Limits) -> Decision:
    """Lease the next dispatched entry to the session (its current one, if it holds one)."""
    held = plan.lease_of(session_id)
    if held is not None:
        return Decision([], r.Claimed(lease=_lease_view(held), entry=plan.entries[held.entryID]))
    leased = {x.entryID for x in plan.leases.values()}
    candidates = sorted(
        (e for e in plan.entries.values() if e.status == "dispatched" and e.id not in leased),
        key=dispatch_order,
    )
    for entry in candidates:
        if any(f in plan.locks for f in entry.locked_files()):
            continue  # a file is held by another lease (changed by hand since dispatch)
        lease = Lease(
            id=mint("lease"),
            entryID=entry.id,
            sessionID=session_id,
            granted_at=now,
            renewed_at=now,
            expires_at=now + limits.lease_ms,
            files=entry.locked_files(),
        )
        locks = [_lock(lease, f) for f in lease.files]
        sessions = entry.session_ids + ([session_id] if session_id not in entry.session_ids else [])
        started = bump(
            entry, now, status="in_progress", assigned_to=session_id, session_ids=sessions
        )
        events: list[Any] = [
            LeaseGranted(
                leaseID=lease.id, entryID=lease.entryID, sessionID=lease.sessionID, leases=[lease]
            )
        ]
        if locks:
            events.append(
                LocksAcquired(
                    leaseID=lease.id,
                    entryID=lease.entryID,
                    sessionID=lease.sessionID,
                    files=lease.files,
                    locks=locks,
                )
            )
        events.append(
            EntryStarted(
                leaseID=lease.id,
                entryID=lease.entryID,
                sessionID=lease.sessionID,
                entries=[started],
            )
        )
        return Decision(events, r.Claimed(lease=_lease_view(lease), entry=started))
    return Decision([], None)


def _lock(lease: Lease, file: str) -> FileLock:
    return FileLock(
        file=file,
        leaseID=lease.id,
        entryID=lease.entryID,
        sessionID=lease.sessionID,
        expires_at=lease.expires_at,
    )


def _live_lease(plan: Plan, lease_id: str, now: int) -> Lease:
    lease = lease_of(plan, lease_id)
    if lease.expires_at <= now:
        raise Conflict(
            f"lease {lease_id} expired at {lease.expires_at}; claim again",
            {"leaseID": lease_id, "expires_at": lease.expires_at},
            code="LEASE_EXPIRED",
        )
    return lease


def decide_heartbeat(plan: Plan, lease_id: str, now: int, limits: Limits) -> Decision:
    lease = _live_lease(plan, lease_id, now)
    renewed = replace(lease, renewed_at=now, expires_at=now + limits.lease_ms)
    locks = [_lock(renewed, f) for f in lease.files if f in plan.locks]
    event = LeaseRenewed(
        leaseID=lease.id,
        entryID=lease.entryID,
        sessionID=lease.sessionID,
        expires_at=renewed.expires_at,
        leases=[renewed],
        locks=locks,
    )
    return Decision([event], r.LeaseBody(lease=_lease_view(renewed)))


def decide_complete(plan: Plan, lease_id: str, given: CompleteInput, now: int) -> Decision:
    lease = _live_lease(plan, lease_id, now)
    entry = entry_of(plan, lease.entryID)
    done, events = move(
        plan,
        entry,
        "completed",
        now,
        "completed by worker",
        summary=given.summary,
        report=list(given.report),
    )
    return Decision(events, r.EntryBody(entry=done))


def decide_fail(plan: Plan, lease_id: str, given: FailInput, now: int, limits: Limits) -> Decision:
    lease = _live_lease(plan, lease_id, now)
    entry = entry_of(plan, lease.entryID)
    after, events = retry_or_fail(plan, entry, now, limits, given.reason, retry=given.retry)
    return Decision(events, r.EntryBody(entry=after.entries[entry.id]))


def workers_view(plan: Plan) -> r.Workers:
    return r.Workers(workers=sorted(plan.leases.values(), key=lambda x: x.granted_at))


def locks_view(plan: Plan) -> r.Locks:
    return r.Locks(locks=sorted(plan.locks.values(), key=lambda x: x.file))
