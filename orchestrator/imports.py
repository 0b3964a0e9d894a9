"""Importing a TODO document into a workspace: pure decisions on the plan.

An import adds the document's phases (with their memory notes) and entries to the workspace,
all in one append or not at all. What the workspace already has wins: an id of the document
that is taken in the workspace is replaced by a fresh one (and every reference to it follows),
the project context is set only where the workspace has none, and a cap the workspace sets is
kept over the document's. Into an empty workspace, then, every id is preserved, and exporting
again gives the same document.
"""

from typing import Annotated, Any

import msgspec

from orchestrator.documents import DocumentEntry, DocumentPhase, PlanDocument
from orchestrator.events import (
    BudgetUpdated,
    EntryCreated,
    ImportCompleted,
    ImportFailed,
    ImportProgress,
    ImportStarted,
    MemoryAdded,
    PhaseCreated,
    TodoUpdated,
)
from orchestrator.executor import pause_for_budget
from orchestrator.fields import EntityID
from orchestrator.ids import mint
from orchestrator.model import BudgetCaps, Entry, MemoryNote, Phase, Plan, Spec, TodoMeta
from orchestrator.plan import Decision
from orchestrator.rules import replace
from orchestrator.transfer import ImportJob, ImportSource, Problem, Remapped

# Ending with `$(?!\n)`, as in orchestrator/fields.py: no trailing newline.
RepoUrl = Annotated[
    str, msgspec.Meta(min_length=1, max_length=4096, pattern=r"^[^\x00-\x1f\x7f]+$(?!\n)")
]
RefName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_./+-]{0,255}$(?!\n)")]
RepoPath = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_./-]{0,1023}$(?!\n)")]


class ImportInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Exactly one source: a git repository (an ``https://`` URL of a public host, unless the
    server allows more), a document (a JSON object, or a Markdown checklist as a string), or
    a vault snapshot of this workspace."""

    repoUrl: RepoUrl | None = None
    ref: RefName | None = None  # a branch or tag of the repository; default: its HEAD
    path: RepoPath | None = None  # the document's file in the repository; default: searched
    document: dict[str, Any] | str | None = None
    snapshotID: EntityID | None = None


def decide_start(plan: Plan, job_id: str, source: ImportSource, now: int) -> Decision:
    """Record the job (creating the TODO if the workspace has none, so that its id is known
    from the start)."""
    todo = plan.todo or TodoMeta(id=mint("todo"), created_at=now)
    job = ImportJob(id=job_id, todoID=todo.id, source=source, created_at=now, updated_at=now)
    events: list[Any] = [] if plan.todo else [TodoUpdated(todo=todo)]
    events.append(ImportStarted(jobID=job_id, job=job))
    return Decision(events, {"importJobID": job_id, "todoID": todo.id})


def progressed(job: ImportJob, progress: int, stage: str, now: int) -> ImportProgress:
    job = replace(job, progress=progress, stage=stage, updated_at=now)
    return ImportProgress(jobID=job.id, job=job)


def failed(job: ImportJob, error: str, problems: list[Problem], now: int) -> ImportFailed:
    job = replace(
        job, status="failed", stage="failed", error=error, problems=problems, updated_at=now
    )
    return ImportFailed(jobID=job.id, job=job)


def _assign(
    given: list[str | None], taken: set[str], prefix: str
) -> tuple[list[str], dict[str, str]]:
    """An id for each item: the given one where it is free, else a fresh one."""
    ids: list[str] = []
    remapped: dict[str, str] = {}
    for ident in given:
        if ident is not None and ident not in taken:
            ids.append(ident)
        else:
            ids.append(mint(prefix))
            if ident is not None:
                remapped[ident] = ids[-1]
        taken.add(ids[-1])
    return ids, remapped


def decide_import(plan: Plan, document: PlanDocument, job: ImportJob, now: int) -> Decision:
    """Append the document to the plan: phases, their notes, entries (numbered after the
    workspace's), caps and project context; then the job's completion, in the same append."""
    entry_ids, entries_remapped = _assign(
        [e.id for e in document.entries], set(plan.entries), "entry"
    )
    phase_ids, phases_remapped = _assign([p.id for p in document.phases], set(plan.phases), "phs")
    entry_map = {e.id: new for e, new in zip(document.entries, entry_ids, strict=True) if e.id}
    phase_map = {p.id: new for p, new in zip(document.phases, phase_ids, strict=True)}
    todo = plan.todo or TodoMeta(id=job.todoID, created_at=now)
    events: list[Any] = []
    if document.project_context and not todo.project_context:
        todo = replace(todo, project_context=document.project_context)
        events.append(TodoUpdated(todo=todo))
    elif plan.todo is None:
        events.append(TodoUpdated(todo=todo))
    base_seq = max((p.seq for p in plan.phases.values()), default=-1) + 1
    for i, (phase, ident) in enumerate(zip(document.phases, phase_ids, strict=True)):
        events += _phase_events(phase, ident, base_seq + i, now + i, now)
    for item, ident in zip(document.entries, entry_ids, strict=True):
        entry = _entry(item, ident, todo.next_seq, entry_map, phase_map, now)
        todo = replace(todo, next_seq=todo.next_seq + 1)
        events.append(EntryCreated(entryID=ident, entries=[entry], todo=todo))
    if document.budget is not None:
        events += _caps_events(plan, document.budget.caps, now)
    done = replace(
        job,
        status="completed",
        progress=100,
        stage="completed",
        entries=len(document.entries),
        phases=len(document.phases),
        remapped=Remapped(entries=entries_remapped, phases=phases_remapped),
        updated_at=now,
    )
    events.append(ImportCompleted(jobID=job.id, job=done))
    return Decision(events, done)


def _phase_events(
    given: DocumentPhase, ident: str, default_seq: int, created_at: int, now: int
) -> list[Any]:
    # Created a millisecond apart in document order, so phases of one ``seq`` keep theirs.
    phase = Phase(
        id=ident,
        name=given.name,
        description=given.description,
        seq=given.seq if given.seq is not None else default_seq,
        status=given.status,
        phase_rounds=given.phase_rounds,
        container_id=given.container_id,
        created_at=created_at,
        updated_at=created_at,
    )
    events: list[Any] = [PhaseCreated(phaseID=ident, phases=[phase])]
    if given.memory:
        notes = [
            MemoryNote(
                text=n.text,
                sessionID=n.sessionID,
                created_at=n.created_at if n.created_at is not None else now,
            )
            for n in given.memory
        ]
        counted = replace(phase, memory_count=len(notes))
        events.append(MemoryAdded(phaseID=ident, notes=notes, phases=[counted]))
    return events


def _entry(
    given: DocumentEntry,
    ident: str,
    seq: int,
    entries: dict[str, str],
    phases: dict[str, str],
    now: int,
) -> Entry:
    return Entry(
        id=ident,
        seq=seq,
        type=given.type,
        content=given.content,
        spec=given.spec or Spec(),
        spec_frozen=given.spec_frozen,
        status=given.status,
        priority=given.priority,
        depends_on=[entries[d] for d in given.depends_on],
        children=[entries[c] for c in given.children],
        parallelizable=given.parallelizable,
        parallel_group=given.parallel_group,
        files=sorted(set(given.files)),
        budget_usd=given.budget_usd,
        budget_locked=given.budget_locked,
        budget_rounds=given.budget_rounds,
        created_by=given.created_by,
        phase_id=phases[given.phase_id] if given.phase_id is not None else None,
        summary=given.summary,
        report=list(given.report),
        created_at=now,
        updated_at=now,
    )


def _caps_events(plan: Plan, caps: BudgetCaps, now: int) -> list[Any]:
    """The document's caps where the workspace sets none; a spent one pauses the executor."""
    kept = {k: v for k, v in msgspec.structs.asdict(plan.caps).items() if v is not None}
    merged = BudgetCaps(**{**msgspec.structs.asdict(caps), **kept})
    if merged == plan.caps:
        return []
    return [BudgetUpdated(caps=merged), *pause_for_budget(replace(plan, caps=merged), now)]


ABANDON_GRACE_S = 30


def as_seen(job: ImportJob, now: int, timeout_s: float) -> ImportJob:
    """The job as a reader should see it: one still running well past the time a job may
    take was abandoned (its replica stopped before recording how it ended)."""
    if job.status == "running" and now - job.created_at > (timeout_s + ABANDON_GRACE_S) * 1000:
        return replace(
            job,
            status="failed",
            stage="failed",
            error=f"abandoned: still running {timeout_s + ABANDON_GRACE_S:g} s after it "
            "started (the replica running it stopped); import again",
        )
    return job
