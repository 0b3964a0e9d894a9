"""The executor: its run state, and the dispatch cycle that hands pending entries to workers.

An entry is dispatched only when it is pending, its dependencies are completed, its phase is
active, no other worker holds (or was dispatched with) one of its files, a worker slot is
free, and no budget cap is spent. ``diagnose`` says, per pending entry, which of these held.
The cycle also expires worker leases that missed their heartbeat and returns entries that
were dispatched but never claimed. All pure: the dispatcher (``orchestrator.dispatcher``)
runs it on one replica per workspace.
"""

from dataclasses import dataclass
from typing import Any

from orchestrator import results as r
from orchestrator.errors import Conflict
from orchestrator.events import (
    BudgetExceeded,
    EntryDispatched,
    ExecutorPaused,
    ExecutorResumed,
    ExecutorStarted,
    ExecutorStopped,
    LeaseExpired,
)
from orchestrator.model import ACTIVE, TRANSITIONS, Entry, ExecutorState, Plan
from orchestrator.plan import Decision
from orchestrator.results import Diagnostic, Reason
from orchestrator.rules import bump, dispatch_order, held_files, move, release, replace, unlock


@dataclass(frozen=True)
class Limits:
    """Executor settings that are not per-workspace caps."""

    default_workers: int = 4  # worker slots when ``max_workers`` is not set
    max_attempts: int = 3  # attempts (lease expiries, retried failures) before an entry fails
    lease_ms: int = 30_000  # a worker lease runs this long past each heartbeat
    claim_ms: int = 300_000  # a dispatched entry nobody claims goes back to pending after this


# Budgets


def exceeded_caps(plan: Plan, now: int) -> list[tuple[str, float, float]]:
    """The global caps that are spent: (cap, limit, spent)."""
    caps, usage = plan.caps, plan.usage
    checks = [
        ("cap_usd", caps.cap_usd, usage.cost_usd),
        ("max_tokens", caps.max_tokens, usage.tokens),
        ("max_tool_calls", caps.max_tool_calls, plan.tool_calls),
        ("max_wall_ms", caps.max_wall_ms, plan.executor.wall_ms(now)),
    ]
    return [
        (name, float(limit), float(spent))
        for name, limit, spent in checks
        if limit is not None and spent >= limit
    ]


def worker_slots(plan: Plan, limits: Limits) -> int:
    return plan.caps.max_workers or limits.default_workers


def pause_for_budget(plan: Plan, now: int) -> list[Any]:
    """A running executor pauses when a global cap is spent, saying which."""
    spent = exceeded_caps(plan, now)
    if not spent or plan.executor.status != "running":
        return []
    cap, limit, value = spent[0]
    paused = _stop_clock(plan.executor, now, "paused", f"budget: {cap} spent")
    return [
        BudgetExceeded(scope="global", cap=cap, limit=limit, spent=value),
        ExecutorPaused(reason=f"budget: {cap} spent ({value:g} of {limit:g})", executor=paused),
    ]


# Run state


def _stop_clock(state: ExecutorState, now: int, status: str, reason: str | None) -> ExecutorState:
    return replace(
        state, status=status, reason=reason, running_since=None, ran_ms=state.wall_ms(now)
    )


def decide_start(plan: Plan, now: int) -> Decision:
    state = plan.executor
    if state.status == "running":
        return Decision([], r.Started(started=True))
    _check_caps(plan, now, "start")
    started = replace(
        state, status="running", reason=None, running_since=now, started_at=state.started_at or now
    )
    return Decision([ExecutorStarted(executor=started)], r.Started(started=True))


def decide_pause(plan: Plan, now: int, reason: str = "paused by operator") -> Decision:
    state = plan.executor
    if state.status == "paused":
        return Decision([], r.Paused(paused=True))
    if state.status != "running":
        raise Conflict(
            "the executor is not running; start it first",
            {"status": state.status},
            code="EXECUTOR_NOT_RUNNING",
        )
    paused = _stop_clock(state, now, "paused", reason)
    return Decision([ExecutorPaused(reason=reason, executor=paused)], r.Paused(paused=True))


def decide_resume(plan: Plan, now: int) -> Decision:
    state = plan.executor
    if state.status == "running":
        return Decision([], r.Resumed(resumed=True))
    if state.status != "paused":
        raise Conflict(
            "the executor is stopped, not paused; start it instead",
            {"status": state.status},
            code="EXECUTOR_NOT_PAUSED",
        )
    _check_caps(plan, now, "resume")
    resumed = replace(state, status="running", reason=None, running_since=now)
    return Decision([ExecutorResumed(executor=resumed)], r.Resumed(resumed=True))


def _check_caps(plan: Plan, now: int, action: str) -> None:
    """Running again with a cap spent would only pause again: say which cap to raise."""
    spent = exceeded_caps(plan, now)
    if spent:
        cap, limit, value = spent[0]
        raise Conflict(
            f"cannot {action}: {cap} is spent ({value:g} of {limit:g}); raise or remove the "
            "cap first (PATCH /budget)",
            {"cap": cap, "limit": limit, "spent": value},
            code="BUDGET_SPENT",
        )


def decide_stop_all(plan: Plan, now: int) -> Decision:
    """Stop dispatching, revoke every worker lease (and its locks), and put the entries that
    were being worked on back to pending (their attempt not counted)."""
    events: list[Any] = []
    returned: list[str] = []
    for entry in plan.ordered_entries():
        if entry.status in ACTIVE and "pending" in TRANSITIONS[entry.status]:
            _, moved = move(plan, entry, "pending", now, "stopped by operator")
            events += moved
            returned.append(entry.id)
        elif entry.status in ACTIVE:
            events += release(plan, entry, "revoked", "stopped by operator")
    released = [lease.id for lease in plan.leases.values()]
    stopped = _stop_clock(plan.executor, now, "stopped", "stopped by operator")
    events.append(ExecutorStopped(executor=stopped))
    return Decision(events, r.Stopped(stopped=True, released=released, returned=returned))


# Dispatch


def _dependencies(plan: Plan, entry: Entry) -> list[str]:
    return [
        d for d in entry.depends_on if d in plan.entries and plan.entries[d].status != "completed"
    ]


def _reasons(
    plan: Plan, entry: Entry, reserved: dict[str, str], slots: int, exclusive: str | None
) -> list[Reason]:
    reasons: list[Reason] = []
    if waiting := _dependencies(plan, entry):
        reasons.append(Reason("dependencies", "waiting for dependencies to complete", waiting))
    phase = plan.phases.get(entry.phase_id) if entry.phase_id else None
    if phase is not None and phase.status != "active":
        reasons.append(
            Reason("phase_inactive", f"phase {phase.name!r} is {phase.status}", [phase.id])
        )
    if locked := sorted(f for f in entry.locked_files() if f in reserved):
        holders = sorted({reserved[f] for f in locked})
        reasons.append(
            Reason("files_locked", f"files held by another worker: {', '.join(locked)}", holders)
        )
    if entry.budget_usd is not None and entry.spent_usd >= entry.budget_usd:
        reasons.append(Reason("entry_budget_spent", "the entry's budget_usd is spent"))
    if entry.budget_rounds is not None and entry.rounds_completed >= entry.budget_rounds:
        reasons.append(Reason("entry_rounds_spent", "the entry's budget_rounds are used up"))
    if exclusive is not None:
        reasons.append(Reason("exclusive", "a non-parallelizable entry is running", [exclusive]))
    if slots <= 0:
        reasons.append(Reason("no_worker_slot", "every worker slot is taken"))
    return reasons


def dispatch(plan: Plan, now: int, limits: Limits) -> tuple[list[Any], list[Diagnostic]]:
    """One dispatch cycle over the pending entries, by priority (critical first), then seq."""
    active = [e for e in plan.entries.values() if e.status in ACTIVE]
    reserved = {f: e.id for e in active for f in e.locked_files()}
    reserved.update({lock.file: lock.entryID for lock in plan.locks.values()})
    slots = worker_slots(plan, limits) - len(active)
    exclusive = next((e.id for e in active if not e.parallelizable), None)
    spent = exceeded_caps(plan, now)
    pending = sorted(
        (e for e in plan.entries.values() if e.status == "pending"),
        key=dispatch_order,
    )
    events: list[Any] = []
    diagnostics: list[Diagnostic] = []
    for entry in pending:
        reasons = _reasons(plan, entry, reserved, slots, exclusive)
        if not entry.parallelizable and not reasons and (active or events):
            reasons.append(Reason("not_parallelizable", "runs alone; other entries are running"))
        if spent:
            cap, limit, value = spent[0]
            reasons.append(Reason("budget_spent", f"{cap} is spent ({value:g} of {limit:g})"))
        if reasons:
            diagnostics.append(Diagnostic(entryID=entry.id, dispatched=False, reasons=reasons))
            continue
        dispatched = bump(entry, now, status="dispatched")
        events.append(EntryDispatched(entryID=entry.id, entries=[dispatched]))
        diagnostics.append(Diagnostic(entryID=entry.id, dispatched=True, reasons=[]))
        reserved.update({f: entry.id for f in entry.locked_files()})
        slots -= 1
        if not entry.parallelizable:
            exclusive = entry.id
    return events, diagnostics


def expire(plan: Plan, now: int, limits: Limits) -> tuple[Plan, list[Any]]:
    """Expire leases past their heartbeat (locks released, entry back to pending with the
    attempt counted, or failed after ``max_attempts``), and return dispatched entries nobody
    claimed in time. Returns the plan as these events leave it, to decide on further."""
    events: list[Any] = []
    for lease in sorted(plan.leases.values(), key=lambda x: x.expires_at):
        if lease.expires_at > now:
            continue
        held = held_files(plan, lease)
        events += unlock(plan, lease, "lease expired")
        events.append(
            LeaseExpired(
                leaseID=lease.id, entryID=lease.entryID, sessionID=lease.sessionID, ended=[lease.id]
            )
        )
        plan = replace(
            plan,
            leases={k: v for k, v in plan.leases.items() if k != lease.id},
            locks={k: v for k, v in plan.locks.items() if k not in held},
        )
        entry = plan.entries.get(lease.entryID)
        if entry is not None and entry.status in ACTIVE:
            plan, moved = retry_or_fail(plan, entry, now, limits, "lease expired")
            events += moved
    for entry in plan.ordered_entries():
        claimed = any(x.entryID == entry.id for x in plan.leases.values())
        if (
            entry.status == "dispatched"
            and not claimed
            and entry.updated_at + limits.claim_ms <= now
        ):
            moved_entry, moved = move(plan, entry, "pending", now, "not claimed in time")
            plan = replace(plan, entries={**plan.entries, entry.id: moved_entry})
            events += moved
    return plan, events


def retry_or_fail(
    plan: Plan, entry: Entry, now: int, limits: Limits, reason: str, retry: bool = True
) -> tuple[Plan, list[Any]]:
    """Count an attempt: back to pending while attempts remain, else failed."""
    attempts = entry.attempts + 1
    to = "pending" if retry and attempts < limits.max_attempts else "failed"
    why = reason if to == "pending" else f"{reason}; attempt {attempts} of {limits.max_attempts}"
    moved_entry, moved = move(plan, entry, to, now, why, attempts=attempts)
    return replace(plan, entries={**plan.entries, entry.id: moved_entry}), moved


def decide_cycle(plan: Plan, now: int, limits: Limits, force: bool = False) -> Decision:
    """What the dispatcher does each tick (``force``: dispatch even when not running)."""
    after, events = expire(plan, now, limits)
    events += pause_for_budget(after, now)
    diagnostics: list[Diagnostic] = []
    pausing = any(isinstance(e, ExecutorPaused) for e in events)
    if force or (after.executor.status == "running" and not pausing):
        dispatched, diagnostics = dispatch(after, now, limits)
        events += dispatched
    dispatched = [d.entryID for d in diagnostics if d.dispatched]
    return Decision(
        events,
        r.Cycle(dispatched=dispatched, diagnostics=diagnostics, executor=after.executor.status),
    )


def status_view(plan: Plan, now: int, limits: Limits, dispatcher: str | None) -> r.ExecutorBody:
    counts: dict[str, int] = {}
    for entry in plan.entries.values():
        counts[entry.status] = counts.get(entry.status, 0) + 1
    state = plan.executor
    workers = r.WorkerCounts(
        active=sum(counts.get(s, 0) for s in ACTIVE),
        max=worker_slots(plan, limits),
        leases=len(plan.leases),
    )
    status = r.ExecutorStatus(
        status=state.status,
        reason=state.reason,
        started_at=state.started_at,
        wall_ms=state.wall_ms(now),
        dispatcher=dispatcher,
        workers=workers,
        entries=counts,
        exceeded=[cap for cap, _, _ in exceeded_caps(plan, now)],
    )
    return r.ExecutorBody(executor=status)
