"""Budgets: global caps, usage reports, and what a spent cap does.

Usage accumulates per workspace and per entry. A report that spends an entry's
``budget_usd`` (or uses its ``budget_rounds``) emits ``budget.exceeded`` and blocks the
entry; one that spends a global cap emits it and pauses the executor.
"""

from typing import Annotated, Any

import msgspec

from orchestrator import results as r
from orchestrator.errors import ValidationFailed
from orchestrator.events import BudgetExceeded, BudgetUpdated, SessionID, UsageReported
from orchestrator.executor import Limits, exceeded_caps, pause_for_budget, worker_slots
from orchestrator.fields import EntityID
from orchestrator.model import ACTIVE, TRANSITIONS, BudgetCaps, Count, Entry, Money, Plan
from orchestrator.plan import Decision
from orchestrator.rules import bump, entry_of, move, replace


class UsageInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    sessionID: SessionID
    entryID: EntityID | None = None
    cost_usd: Money = 0.0
    tokens: Count = 0
    rounds: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0


def usage_view(plan: Plan, now: int, limits: Limits) -> r.UsageView:
    return r.UsageView(
        cost_usd=plan.usage.cost_usd,
        tokens=plan.usage.tokens,
        tool_calls=plan.tool_calls,
        wall_ms=plan.executor.wall_ms(now),
        workers=sum(1 for e in plan.entries.values() if e.status in ACTIVE),
        max_workers=worker_slots(plan, limits),
    )


def budget_view(plan: Plan, now: int, limits: Limits) -> r.BudgetBody:
    view = r.BudgetView(
        caps=plan.caps,
        usage=usage_view(plan, now, limits),
        exceeded=[cap for cap, _, _ in exceeded_caps(plan, now)],
    )
    return r.BudgetBody(budget=view)


def decide_caps(plan: Plan, patch: dict[str, Any], now: int, limits: Limits) -> Decision:
    """Merge ``patch`` into the caps (``null`` removes a cap)."""
    known = set(BudgetCaps.__struct_fields__)
    unknown = sorted(set(patch) - known)
    if unknown:
        raise ValidationFailed(
            f"unknown cap {unknown[0]!r}; caps are {', '.join(sorted(known))}",
            {"path": f"$.{unknown[0]}"},
        )
    merged = {**msgspec.to_builtins(plan.caps), **patch}
    caps = msgspec.convert({k: v for k, v in merged.items() if v is not None}, BudgetCaps)
    after = replace(plan, caps=caps)
    events: list[Any] = [BudgetUpdated(caps=caps)]
    events += pause_for_budget(after, now)
    return Decision(events, budget_view(after, now, limits))


def _entry_exceeded(before: Entry, after: Entry) -> list[tuple[str, float, float]]:
    """The entry budgets this report's spend reaches, once: when it crosses the budget, or
    is the first spend against a budget of 0 (which no spend crosses)."""
    crossed = []
    usd, was, now = after.budget_usd, before.spent_usd, after.spent_usd
    if usd is not None and was < now and usd <= now and (was < usd or was == 0):
        crossed.append(("budget_usd", usd, now))
    rounds, done, used = after.budget_rounds, before.rounds_completed, after.rounds_completed
    if rounds is not None and done < used and rounds <= used and (done < rounds or done == 0):
        crossed.append(("budget_rounds", float(rounds), float(used)))
    return crossed


def decide_usage(plan: Plan, given: UsageInput, now: int, limits: Limits) -> Decision:
    usage = replace(
        plan.usage,
        cost_usd=plan.usage.cost_usd + given.cost_usd,
        tokens=plan.usage.tokens + given.tokens,
        reports=plan.usage.reports + 1,
    )
    events: list[Any] = []
    entries: list[Entry] = []
    after = replace(plan, usage=usage)
    if given.entryID is not None:
        entry = entry_of(plan, given.entryID)
        sessions = entry.session_ids + (
            [given.sessionID] if given.sessionID not in entry.session_ids else []
        )
        spent = bump(
            entry,
            now,
            spent_usd=entry.spent_usd + given.cost_usd,
            tokens=entry.tokens + given.tokens,
            rounds_completed=entry.rounds_completed + given.rounds,
            session_ids=sessions,
        )
        entries.append(spent)
        after = replace(after, entries={**after.entries, entry.id: spent})
    events.append(
        UsageReported(
            sessionID=given.sessionID,
            entryID=given.entryID,
            cost_usd=given.cost_usd,
            tokens=given.tokens,
            rounds=given.rounds,
            usage=usage,
            entries=entries,
        )
    )
    if entries:
        entry = entries[0]
        for cap, limit, value in _entry_exceeded(plan.entries[entry.id], entry):
            events.append(
                BudgetExceeded(scope="entry", cap=cap, limit=limit, spent=value, entryID=entry.id)
            )
        if len(events) > 1 and "blocked" in TRANSITIONS[entry.status]:
            events += move(after, entry, "blocked", now, "budget exceeded")[1]
    before = {cap for cap, _, _ in exceeded_caps(plan, now)}
    if any(cap not in before for cap, _, _ in exceeded_caps(after, now)):
        events += pause_for_budget(after, now) or [
            BudgetExceeded(scope="global", cap=c, limit=lim, spent=v)
            for c, lim, v in exceeded_caps(after, now)
            if c not in before
        ]
    return Decision(events, r.UsageBody(usage=usage_view(after, now, limits)))
