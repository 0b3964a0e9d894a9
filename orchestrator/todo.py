"""The Master TODO: entries, their status machine, specs, priorities and entry budgets.

Each command is a pure decision on the plan (``decide_*``) run through
``Orchestrator.command``, which appends its events expecting the plan's version.
"""

from typing import Annotated, Any

import msgspec

from orchestrator import results as r
from orchestrator.errors import Conflict, ValidationFailed
from orchestrator.events import (
    BudgetExceeded,
    EntryBudgetChanged,
    EntryBudgetLocked,
    EntryCreated,
    EntryDeleted,
    PriorityChanged,
    RoundsChanged,
    SpecFrozen,
    SpecUpdated,
    TodoUpdated,
)
from orchestrator.fields import EntityID, Name
from orchestrator.ids import mint
from orchestrator.model import (
    ACTIVE,
    TRANSITIONS,
    Count,
    Entry,
    EntryStatus,
    FilePath,
    Money,
    Plan,
    Priority,
    Spec,
    SpecFields,
    TodoMeta,
)
from orchestrator.plan import Decision
from orchestrator.rules import bump, check_version, entry_of, move, release, replace

MAX_ENTRIES_PER_REQUEST = 500
IdList = Annotated[list[EntityID], msgspec.Meta(max_length=256)]


class SpecDraft(SpecFields, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The published spec object as a client sends it. ``last_edited`` and ``revision`` are
    the server's: taken (a client may send back the spec it read), and ignored."""

    last_edited: int | None = None
    revision: int | None = None


class SpecInput(SpecDraft, kw_only=True, forbid_unknown_fields=True, frozen=True):
    version: int | None = None  # the entry's, as with every entry write


def written_spec(given: SpecFields, author: str | None, revision: int, now: int) -> Spec:
    """The spec as stored after an edit: the author's fields, stamped by the server."""
    fields = {f: getattr(given, f) for f in SpecFields.__struct_fields__}
    fields["authored_by"] = given.authored_by or author
    return Spec(**fields, last_edited=now, revision=revision)


def _content(spec: SpecFields) -> tuple[Any, ...]:
    return tuple(getattr(spec, f) for f in SpecFields.__struct_fields__ if f != "authored_by")


class EntryInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A new entry. ``id`` may be given (import, or entries that depend on each other in one
    request); otherwise one is minted."""

    id: EntityID | None = None
    type: Name = "task"
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=16_384)]
    spec: SpecDraft | None = None
    spec_frozen: bool = False
    priority: Priority = "medium"
    depends_on: IdList = msgspec.field(default_factory=list)
    children: IdList = msgspec.field(default_factory=list)
    parallelizable: bool = True
    parallel_group: Name | None = None
    files: Annotated[list[FilePath], msgspec.Meta(max_length=256)] = msgspec.field(
        default_factory=list
    )
    budget_usd: Money | None = None
    budget_rounds: Count | None = None
    created_by: Name | None = None
    phase_id: EntityID | None = None


class EntriesInput(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    entries: Annotated[
        list[EntryInput], msgspec.Meta(min_length=1, max_length=MAX_ENTRIES_PER_REQUEST)
    ]


class StatusInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    status: EntryStatus
    version: int | None = None
    reason: Annotated[str, msgspec.Meta(max_length=4096)] | None = None


class RoundsInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    budget_rounds: Count | None
    version: int | None = None


class PriorityInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    priority: Priority
    version: int | None = None


class EntryBudgetInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    budget_usd: Money | None
    version: int | None = None


class TodoInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    project_context: Annotated[str, msgspec.Meta(max_length=65_536)]


def document(plan: Plan) -> r.TodoDocument:
    todo = plan.todo
    return r.TodoDocument(
        id=todo.id if todo else None,
        version=plan.version,
        created_at=todo.created_at if todo else None,
        project_context=todo.project_context if todo else "",
        entries=plan.ordered_entries(),
        phases=plan.ordered_phases(),
    )


def _todo(plan: Plan, now: int) -> TodoMeta:
    return plan.todo or TodoMeta(id=mint("todo"), created_at=now)


# Creating


# Each is a graph of its own: a child may depend on its parent, but no entry may wait on
# itself, nor be its own descendant (the tree `orchestrator todo` draws would lose it).
LINK_FIELDS = ("depends_on", "children")


def _check_references(plan: Plan, given: list[EntryInput], ids: list[str]) -> None:
    known = set(plan.entries) | set(ids)
    problems: list[dict[str, str]] = []
    for i, (item, entry_id) in enumerate(zip(given, ids, strict=True)):
        for field in LINK_FIELDS:
            for j, ref in enumerate(getattr(item, field)):
                if ref not in known or ref == entry_id:
                    problems.append({"path": f"$.entries[{i}].{field}[{j}]", "id": ref})
        if item.phase_id is not None and item.phase_id not in plan.phases:
            problems.append({"path": f"$.entries[{i}].phase_id", "id": item.phase_id})
    if problems:
        raise ValidationFailed(
            f"{len(problems)} reference(s) name no entry or phase (or the entry itself): "
            + ", ".join(p["path"] for p in problems),
            {"problems": problems},
        )
    for field in LINK_FIELDS:
        graph = {e.id: list(getattr(e, field)) for e in plan.entries.values()}
        pairs = zip(ids, given, strict=True)
        graph.update({entry_id: list(getattr(item, field)) for entry_id, item in pairs})
        cycle = find_cycle(graph)
        if cycle:
            raise ValidationFailed(
                cycle_message(field, cycle), {"cycle": cycle, "field": field}, code="CYCLE"
            )


def cycle_message(field: str, cycle: list[str]) -> str:
    return f"{field} forms a cycle: " + " -> ".join(cycle)


def find_cycle(graph: dict[str, list[str]]) -> list[str]:
    """A cycle in ``graph`` (node -> the nodes it links to), or [] if none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in graph:
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            node, i = stack.pop()
            if i == 0:
                if state.get(node) == 2:
                    continue
                if state.get(node) == 1:
                    return [*path[path.index(node) :], node]
                state[node] = 1
                path.append(node)
            deps = graph.get(node, [])
            if i < len(deps):
                stack.append((node, i + 1))
                stack.append((deps[i], 0))
            else:
                state[node] = 2
                path.pop()
    return []


def decide_create(
    plan: Plan, given: list[EntryInput], now: int, author: str | None = None
) -> Decision:
    """``author`` (the token's name) signs the specs that name no ``authored_by``."""
    ids = [item.id or mint("entry") for item in given]
    taken = [i for i in ids if i in plan.entries]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if taken or repeated:
        raise Conflict(
            f"entry id {(taken or repeated)[0]} is already in use",
            {"ids": taken or repeated},
            code="ENTRY_EXISTS",
        )
    _check_references(plan, given, ids)
    todo = _todo(plan, now)
    events: list[Any] = []
    created: list[Entry] = []
    for item, entry_id in zip(given, ids, strict=True):
        entry = Entry(
            id=entry_id,
            seq=todo.next_seq,
            type=item.type,
            content=item.content,
            spec=Spec() if item.spec is None else written_spec(item.spec, author, 1, now),
            spec_frozen=item.spec_frozen,
            priority=item.priority,
            depends_on=list(item.depends_on),
            children=list(item.children),
            parallelizable=item.parallelizable,
            parallel_group=item.parallel_group,
            files=sorted(set(item.files)),
            budget_usd=item.budget_usd,
            budget_rounds=item.budget_rounds,
            created_by=item.created_by,
            phase_id=item.phase_id,
            created_at=now,
            updated_at=now,
        )
        todo = replace(todo, next_seq=todo.next_seq + 1)
        created.append(entry)
        events.append(EntryCreated(entryID=entry.id, entries=[entry], todo=todo))
    return Decision(events, r.EntriesBody(entries=created))


def decide_update_todo(plan: Plan, given: TodoInput, now: int) -> Decision:
    """No result: the document's version is the seq the update is appended at, unknown
    here, so the route answers with the document read back after the append."""
    todo = replace(_todo(plan, now), project_context=given.project_context)
    return Decision([TodoUpdated(todo=todo)])


# Changing one entry


def decide_status(plan: Plan, entry_id: str, given: StatusInput, now: int) -> Decision:
    entry = entry_of(plan, entry_id)
    check_version("entry", entry.version, given.version, entry_id)
    if given.status == entry.status:
        return Decision([], r.EntryBody(entry=entry))
    moved, events = move(plan, entry, given.status, now, given.reason)
    return Decision(events, r.EntryBody(entry=moved))


def _editable_budget(entry: Entry) -> None:
    if entry.budget_locked:
        raise Conflict(
            f"entry {entry.id}'s budget is locked; it cannot be reallocated",
            {"entryID": entry.id},
            code="BUDGET_LOCKED",
        )


def _already_spent(plan: Plan, entry: Entry, changed: Entry, now: int) -> tuple[Entry, list[Any]]:
    """A budget set at or below what the entry has already spent is spent: say so, and block
    the entry, as the usage report that crossed it would have."""
    spent: list[tuple[str, float, float]] = []
    usd = changed.budget_usd
    if (
        usd is not None
        and usd != entry.budget_usd
        and entry.spent_usd > 0
        and usd <= entry.spent_usd
    ):
        spent.append(("budget_usd", usd, entry.spent_usd))
    rounds, done = changed.budget_rounds, entry.rounds_completed
    if rounds is not None and rounds != entry.budget_rounds and done > 0 and rounds <= done:
        spent.append(("budget_rounds", float(rounds), float(done)))
    events: list[Any] = [
        BudgetExceeded(scope="entry", cap=cap, limit=limit, spent=value, entryID=entry.id)
        for cap, limit, value in spent
    ]
    if events and "blocked" in TRANSITIONS[changed.status]:
        changed, moved = move(plan, changed, "blocked", now, "budget exceeded")
        events += moved
    return changed, events


def decide_rounds(plan: Plan, entry_id: str, given: RoundsInput, now: int) -> Decision:
    entry = entry_of(plan, entry_id)
    check_version("entry", entry.version, given.version, entry_id)
    _editable_budget(entry)
    changed = bump(entry, now, budget_rounds=given.budget_rounds)
    events: list[Any] = [RoundsChanged(entryID=entry_id, entries=[changed])]
    changed, spent = _already_spent(plan, entry, changed, now)
    return Decision(events + spent, r.EntryBody(entry=changed))


def decide_budget(plan: Plan, entry_id: str, given: EntryBudgetInput, now: int) -> Decision:
    entry = entry_of(plan, entry_id)
    check_version("entry", entry.version, given.version, entry_id)
    _editable_budget(entry)
    changed = bump(entry, now, budget_usd=given.budget_usd)
    events: list[Any] = [EntryBudgetChanged(entryID=entry_id, entries=[changed])]
    changed, spent = _already_spent(plan, entry, changed, now)
    return Decision(events + spent, r.EntryBody(entry=changed))


def decide_lock_budget(plan: Plan, entry_id: str, now: int) -> Decision:
    entry = entry_of(plan, entry_id)
    if entry.budget_locked:
        return Decision([], r.EntryBody(entry=entry))
    changed = bump(entry, now, budget_locked=True)
    return Decision(
        [EntryBudgetLocked(entryID=entry_id, entries=[changed])], r.EntryBody(entry=changed)
    )


def decide_priority(plan: Plan, entry_id: str, given: PriorityInput, now: int) -> Decision:
    entry = entry_of(plan, entry_id)
    check_version("entry", entry.version, given.version, entry_id)
    changed = bump(entry, now, priority=given.priority)
    return Decision(
        [PriorityChanged(entryID=entry_id, entries=[changed])], r.EntryBody(entry=changed)
    )


def decide_spec(
    plan: Plan, entry_id: str, given: SpecInput, now: int, author: str | None = None
) -> Decision:
    """Replace the spec; each change counts one ``revision``. A spec sent again unchanged
    (a retry, or a read sent back) changes nothing and appends nothing."""
    entry = entry_of(plan, entry_id)
    check_version("entry", entry.version, given.version, entry_id)
    if entry.spec_frozen:
        raise Conflict(
            f"entry {entry_id}'s spec is frozen; it can no longer be edited",
            {"entryID": entry_id},
            code="SPEC_FROZEN",
        )
    spec = written_spec(given, author, entry.spec.revision + 1, now)
    if _content(spec) == _content(entry.spec) and spec.authored_by == entry.spec.authored_by:
        return Decision([], r.EntryBody(entry=entry))
    changed = bump(entry, now, spec=spec)
    return Decision([SpecUpdated(entryID=entry_id, entries=[changed])], r.EntryBody(entry=changed))


def decide_freeze(plan: Plan, entry_id: str, now: int) -> Decision:
    entry = entry_of(plan, entry_id)
    if entry.spec_frozen:
        return Decision([], r.EntryBody(entry=entry))
    changed = bump(entry, now, spec_frozen=True)
    return Decision([SpecFrozen(entryID=entry_id, entries=[changed])], r.EntryBody(entry=changed))


def decide_delete(plan: Plan, entry_id: str, force: bool, now: int) -> Decision:
    entry = entry_of(plan, entry_id)
    dependents = sorted(e.id for e in plan.entries.values() if entry_id in e.depends_on)
    if dependents and not force:
        raise Conflict(
            f"entries {', '.join(dependents)} depend on {entry_id}; "
            "delete with ?force=true to drop the dependency too",
            {"entryID": entry_id, "dependents": dependents},
            code="ENTRY_HAS_DEPENDENTS",
        )
    if entry.status in ACTIVE and not force:
        raise Conflict(
            f"entry {entry_id} is {entry.status}; stop it first, or delete with ?force=true",
            {"entryID": entry_id, "status": entry.status},
            code="ENTRY_ACTIVE",
        )
    events: list[Any] = release(plan, entry, "revoked", "entry deleted")
    touched = [
        bump(
            e,
            now,
            depends_on=[d for d in e.depends_on if d != entry_id],
            children=[c for c in e.children if c != entry_id],
        )
        for e in plan.ordered_entries()
        if e.id != entry_id and (entry_id in e.depends_on or entry_id in e.children)
    ]
    events.append(EntryDeleted(entryID=entry_id, forced=force, deleted=[entry_id], entries=touched))
    return Decision(events, r.Deleted(deleted=True, entryID=entry_id))
