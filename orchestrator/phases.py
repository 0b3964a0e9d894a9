"""Phases: ordered stages of the plan, each with a status, verify rounds, bounded memory
notes, and an orchestrator session that prompts are dispatched to.

Completing a phase (by hand, or by a verify that passes) activates the next pending one.
"""

from typing import Annotated, Any

import msgspec

from orchestrator import results as r
from orchestrator.errors import Conflict, NotFound, TooLarge
from orchestrator.events import (
    MemoryAdded,
    PhaseCreated,
    PhaseStatusChanged,
    PhaseUpdated,
    PhaseVerified,
    PromptDispatched,
    SessionID,
)
from orchestrator.fields import EntityID, Name, Text
from orchestrator.ids import mint
from orchestrator.model import (
    PHASE_TRANSITIONS,
    Entry,
    EntryVerdict,
    MemoryNote,
    Phase,
    PhaseStatus,
    Plan,
    Verification,
)
from orchestrator.plan import Decision
from orchestrator.rules import check_version, phase_of, replace

PhaseSeq = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
PromptText = Annotated[str, msgspec.Meta(min_length=1, max_length=65_536)]


class PhaseInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    id: EntityID | None = None
    name: Name
    description: Text = ""
    seq: PhaseSeq | None = None  # default: after the last phase
    status: PhaseStatus = "pending"
    phase_rounds: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    container_id: Name | None = None
    session_id: SessionID | None = None


class PhasePatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    name: Name | None = None
    description: Text | None = None
    seq: PhaseSeq | None = None
    status: PhaseStatus | None = None
    phase_rounds: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    container_id: Name | None = None
    session_id: SessionID | None = None
    version: int | None = None


class NoteInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=16_384)]
    sessionID: SessionID | None = None


class MemoryInput(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    notes: Annotated[list[NoteInput], msgspec.Meta(min_length=1, max_length=100)]


class PromptInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    text: PromptText
    sessionID: SessionID | None = None
    entryID: EntityID | None = None
    phaseID: EntityID | None = None


def next_seq(plan: Plan) -> int:
    """The seq of a phase added last: 0 for the first."""
    return max((p.seq for p in plan.phases.values()), default=-1) + 1


def decide_create(plan: Plan, given: PhaseInput, now: int) -> Decision:
    phase_id = given.id or mint("phs")
    if phase_id in plan.phases:
        raise Conflict(f"phase {phase_id} already exists", {"phaseID": phase_id}, "PHASE_EXISTS")
    seq = given.seq
    if seq is None:
        seq = next_seq(plan)
    phase = Phase(
        id=phase_id,
        name=given.name,
        description=given.description,
        seq=seq,
        status=given.status,
        phase_rounds=given.phase_rounds,
        container_id=given.container_id,
        session_id=given.session_id,
        created_at=now,
        updated_at=now,
    )
    return Decision([PhaseCreated(phaseID=phase_id, phases=[phase])], r.PhaseBody(phase=phase))


def _check_phase_transition(phase: Phase, to: str) -> None:
    if to not in PHASE_TRANSITIONS[phase.status]:
        allowed = sorted(PHASE_TRANSITIONS[phase.status])
        raise Conflict(
            f"phase {phase.id} cannot go from {phase.status} to {to}",
            {"from": phase.status, "to": to, "allowed": allowed},
            code="ILLEGAL_TRANSITION",
        )


def _status_events(plan: Plan, phase: Phase, to: str, now: int, reason: str) -> list[Any]:
    """Move the phase; completing it activates the next pending phase."""
    _check_phase_transition(phase, to)
    moved = replace(phase, status=to, version=phase.version + 1, updated_at=now)
    events: list[Any] = [
        PhaseStatusChanged(
            phaseID=phase.id, from_=phase.status, to=to, reason=reason, phases=[moved]
        )
    ]
    if to == "completed":
        after = [p for p in plan.ordered_phases() if p.id != phase.id and p.status == "pending"]
        later = [p for p in after if (p.seq, p.created_at) >= (phase.seq, phase.created_at)]
        if later and not any(
            p.status == "active" and p.id != phase.id for p in plan.phases.values()
        ):
            nxt = later[0]
            started = replace(nxt, status="active", version=nxt.version + 1, updated_at=now)
            events.append(
                PhaseStatusChanged(
                    phaseID=nxt.id,
                    from_="pending",
                    to="active",
                    reason=f"phase {phase.name!r} completed",
                    phases=[started],
                )
            )
    return events


def decide_update(plan: Plan, phase_id: str, given: PhasePatch, now: int) -> Decision:
    phase = phase_of(plan, phase_id)
    check_version("phase", phase.version, given.version, phase_id)
    fields = {
        k: getattr(given, k)
        for k in ("name", "description", "seq", "phase_rounds", "container_id", "session_id")
        if getattr(given, k) is not None
    }
    events: list[Any] = []
    if fields:
        phase = replace(phase, **fields, version=phase.version + 1, updated_at=now)
        events.append(PhaseUpdated(phaseID=phase_id, phases=[phase]))
    if given.status is not None and given.status != phase.status:
        events += _status_events(plan, phase, given.status, now, "changed by operator")
    return Decision(events, r.PhaseBody(phase=_latest(events, phase)))


def _latest(events: list[Any], phase: Phase) -> Phase:
    """The phase as the last of ``events`` that touched it leaves it."""
    return next((e.phases[0] for e in reversed(events) if e.phaseID == phase.id), phase)


def verdict(entry: Entry) -> EntryVerdict:
    """PASS when the entry completed and its worker reported every one of its spec's
    ``acceptance_criteria`` met."""
    reasons: list[str] = []
    if entry.status != "completed":
        reasons.append(f"status is {entry.status}, not completed")
    met = {c.criterion for c in entry.report if c.passed}
    failed = {c.criterion for c in entry.report if not c.passed}
    for criterion in entry.spec.acceptance_criteria:
        if criterion in failed:
            reasons.append(f"criterion failed: {criterion}")
        elif criterion not in met:
            reasons.append(f"criterion not reported: {criterion}")
    return EntryVerdict(entry.id, "FAIL" if reasons else "PASS", reasons)


def decide_verify(plan: Plan, phase_id: str, now: int) -> Decision:
    """Check each entry of the phase (cancelled ones aside) and record PASS/FAIL; a phase
    that passes completes, one that fails its last round fails."""
    phase = phase_of(plan, phase_id)
    if phase.status != "active":
        raise Conflict(
            f"phase {phase_id} is {phase.status}; only an active phase is verified",
            {"phaseID": phase_id, "status": phase.status},
            code="PHASE_NOT_ACTIVE",
        )
    entries = [
        e for e in plan.ordered_entries() if e.phase_id == phase_id and e.status != "cancelled"
    ]
    results = [verdict(e) for e in entries]
    passed = all(r.result == "PASS" for r in results)
    rounds = phase.rounds_completed + 1
    verified = replace(
        phase,
        rounds_completed=rounds,
        verification=Verification(passed=passed, at=now, results=results),
        version=phase.version + 1,
        updated_at=now,
    )
    marked = [
        replace(e, verification=r.result, version=e.version + 1, updated_at=now)
        for e, r in zip(entries, results, strict=True)
        if e.verification != r.result
    ]
    events: list[Any] = [
        PhaseVerified(
            phaseID=phase_id, passed=passed, results=results, phases=[verified], entries=marked
        )
    ]
    after = replace(plan, phases={**plan.phases, phase_id: verified})
    if passed:
        events += _status_events(after, verified, "completed", now, "verified")
    elif phase.phase_rounds is not None and rounds >= phase.phase_rounds:
        events += _status_events(after, verified, "failed", now, f"failed verify {rounds} times")
    return Decision(
        events, r.Verified(phase=_latest(events, verified), passed=passed, results=results)
    )


def decide_memory(
    plan: Plan, phase_id: str, given: MemoryInput, now: int, max_notes: int
) -> Decision:
    phase = phase_of(plan, phase_id)
    if phase.memory_count + len(given.notes) > max_notes:
        raise TooLarge(
            f"phase {phase_id} holds at most {max_notes} memory notes "
            f"({phase.memory_count} already); summarize before adding more",
            {"limit": max_notes, "count": phase.memory_count},
            code="MEMORY_FULL",
        )
    notes = [MemoryNote(text=n.text, sessionID=n.sessionID, created_at=now) for n in given.notes]
    counted = replace(phase, memory_count=phase.memory_count + len(notes), updated_at=now)
    event = MemoryAdded(phaseID=phase_id, notes=notes, phases=[counted])
    return Decision([event], r.NotesAdded(notes=notes, count=counted.memory_count))


def decide_prompt(plan: Plan, given: PromptInput, session_id: str | None, now: int) -> Decision:
    """Dispatch a prompt to ``session_id`` (or the phase's session)."""
    phase = phase_of(plan, given.phaseID) if given.phaseID else None
    target = session_id or given.sessionID or (phase.session_id if phase else None)
    if target is None:
        raise Conflict(
            "the phase has no session; name a sessionID, or set the phase's session_id",
            {"phaseID": given.phaseID},
            code="NO_SESSION",
        )
    if given.entryID is not None and given.entryID not in plan.entries:
        raise NotFound(
            f"entry {given.entryID} not found", {"entryID": given.entryID}, code="ENTRY_NOT_FOUND"
        )
    prompt = PromptDispatched(
        id=mint("prm"),
        sessionID=target,
        text=given.text,
        phaseID=given.phaseID,
        entryID=given.entryID,
        created_at=now,
    )
    return Decision([prompt], r.PromptBody(prompt=prompt))
