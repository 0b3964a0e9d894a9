"""The Master TODO as a portable document: what ``GET /vault/export`` writes, what a vault
snapshot stores, and what ``POST /import`` reads.

The document is the plan, not its history: the project context, phases with their memory
notes, entries with their specs, statuses and budgets, and the global budget caps. What one
workspace's run accumulated (spend, attempts, leases, sessions, verify results, timestamps)
stays behind. Entries that were being worked on travel as ``pending``: no worker holds them
in the workspace that imports them. The same msgspec types parse a document, encode it, and
generate its JSON Schema (``python -m orchestrator.documents`` prints it).
"""

import hashlib
import sys
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

from orchestrator import jsonschema, upcast
from orchestrator.errors import ValidationFailed
from orchestrator.fields import EntityID, Name, SessionID, Text
from orchestrator.model import (
    ACTIVE,
    BudgetCaps,
    Check,
    Count,
    Entry,
    FilePath,
    MemoryNote,
    Money,
    Phase,
    PhaseStatus,
    Plan,
    Priority,
    Spec,
)
from orchestrator.problems import check
from orchestrator.transfer import Problem

FORMAT: Final = "orchestrator-todo"
SCHEMA_VERSION: Final = 2  # 1: integer priorities, {text, acceptance} specs, phase order
MAX_ENTRIES: Final = 10_000
MAX_PHASES: Final = 1_000
MAX_NOTES: Final = 1_000

# The statuses an entry travels in: at rest, not held by a worker.
DocumentStatus = Literal["pending", "completed", "failed", "blocked", "cancelled"]
IdList = Annotated[list[EntityID], msgspec.Meta(max_length=256)]
Content = Annotated[str, msgspec.Meta(min_length=1, max_length=16_384)]
PhaseSeq = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]


class DocumentNote(
    msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True, omit_defaults=True
):
    """A phase memory note. ``created_at`` (epoch ms) is kept; absent: the import's time."""

    text: Content
    sessionID: SessionID | None = None
    created_at: Annotated[int, msgspec.Meta(ge=0, le=2**53)] | None = None


class DocumentPhase(
    msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True, omit_defaults=True
):
    """A phase. Entries name it by ``id`` in their ``phase_id``. ``seq`` absent: after the
    phases before it."""

    id: EntityID
    name: Name
    description: Text = ""
    seq: PhaseSeq | None = None
    status: PhaseStatus = "pending"
    phase_rounds: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    container_id: Name | None = None
    memory: Annotated[list[DocumentNote], msgspec.Meta(max_length=MAX_NOTES)] = msgspec.field(
        default_factory=list
    )


class DocumentEntry(
    msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True, omit_defaults=True
):
    """An entry. ``id`` absent: one is minted on import (and nothing can name it).
    ``depends_on``, ``children`` and ``phase_id`` name entries and phases of the same
    document. ``summary`` and ``report`` are what the worker that completed it said."""

    id: EntityID | None = None
    type: Name = "task"
    content: Content
    spec: Spec | None = None  # absent: nothing written yet (revision 0)
    spec_frozen: bool = False
    status: DocumentStatus = "pending"
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
    budget_locked: bool = False
    created_by: Name | None = None
    phase_id: EntityID | None = None
    summary: Text | None = None
    report: Annotated[list[Check], msgspec.Meta(max_length=64)] = msgspec.field(
        default_factory=list
    )


class DocumentBudget(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The global caps (entry budgets are on the entries)."""

    caps: BudgetCaps = BudgetCaps()


class PlanDocument(
    msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True, omit_defaults=True
):
    """A Master TODO, portable between workspaces and installations. Entries are in TODO
    order (the order they get their ``seq`` in on import), phases by their ``seq``."""

    schema: str | None = msgspec.field(default=None, name="$schema")  # for editors; ignored
    format: Literal["orchestrator-todo"]
    schema_version: Literal[2]  # version 1 documents are read too (see ``upgraded``)
    project_context: Annotated[str, msgspec.Meta(max_length=65_536)] = ""
    budget: DocumentBudget | None = None  # absent: no caps
    phases: Annotated[list[DocumentPhase], msgspec.Meta(max_length=MAX_PHASES)] = msgspec.field(
        default_factory=list
    )
    entries: Annotated[list[DocumentEntry], msgspec.Meta(max_length=MAX_ENTRIES)] = msgspec.field(
        default_factory=list
    )


_encoder = msgspec.json.Encoder()


# Validation


class DocumentInvalid(ValidationFailed):
    """A document with problems; ``problems`` lists every one, each with its JSON path."""

    def __init__(self, problems: list[Problem], what: str = "the document", code: str = "") -> None:
        shown = "; ".join(f"at `{p.path}`: {p.message}" for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(
            f"{what} is not a valid TODO document: {len(problems)} problem(s): {shown}{more}",
            {"problems": [msgspec.to_builtins(p) for p in problems]},
            code,
        )
        self.problems = problems


def validate(raw: Any, max_notes: int = MAX_NOTES, root: str = "$") -> PlanDocument:
    """The document ``raw`` (decoded JSON) is, or ``DocumentInvalid`` listing every problem:
    of shape (types, bounds, unknown fields) and of meaning (duplicate ids, references to
    entries or phases the document does not have, dependency cycles, too many notes).
    A document of schema version 1 is read as its version 2 equivalent."""
    raw = upgraded(raw)
    found = check(raw, PlanDocument) + _meaning(raw, max_notes)
    cycles = _cycles(raw)
    # Cycles alone are refused as a request creating them is: 422 CYCLE.
    code = "CYCLE" if cycles and not found else ""
    found += cycles
    if not found:
        try:
            return msgspec.convert(raw, PlanDocument)
        except msgspec.ValidationError as exc:  # a rule the walk missed: still say where
            found, code = [Problem(path="$", message=str(exc))], ""
    if root != "$":
        found = [msgspec.structs.replace(p, path=root + p.path[1:]) for p in found]
    raise DocumentInvalid(found, code=code)


def upgraded(raw: Any) -> Any:
    """A schema version 1 document in version 2's shapes, mapped as the event log's old
    payloads are (``orchestrator.upcast``): integer priorities become words, a
    ``{text, acceptance}`` spec the published spec, a phase's ``order`` its ``seq``.
    Anything else is returned as it is, for ``validate`` to judge."""
    if not isinstance(raw, dict) or raw.get("schema_version") != 1:
        return raw
    out = {**raw, "schema_version": 2}
    entries, phases = raw.get("entries"), raw.get("phases")
    if isinstance(entries, list):
        out["entries"] = upcast.mapped(entries)
    if isinstance(phases, list):
        out["phases"] = upcast.mapped(phases, phases=True)
    return out


def _items(raw: Any, name: str) -> list[tuple[int, dict[str, Any]]]:
    items = raw.get(name) if isinstance(raw, dict) else None
    if not isinstance(items, list):
        return []
    return [(i, item) for i, item in enumerate(items) if isinstance(item, dict)]


def _ids(
    items: list[tuple[int, dict[str, Any]]], kind: str
) -> tuple[dict[str, int], list[Problem]]:
    first: dict[str, int] = {}
    found: list[Problem] = []
    for i, item in items:
        ident = item.get("id")
        if not isinstance(ident, str):
            continue
        if ident in first:
            message = f"duplicate id `{ident}`: {kind}[{first[ident]}] has it too"
            found.append(Problem(path=f"$.{kind}[{i}].id", message=message))
        else:
            first[ident] = i
    return first, found


def _meaning(raw: Any, max_notes: int) -> list[Problem]:
    entries, phases = _items(raw, "entries"), _items(raw, "phases")
    entry_ids, found = _ids(entries, "entries")
    phase_ids, more = _ids(phases, "phases")
    found += more
    for i, item in entries:
        own = item.get("id")
        for field in ("depends_on", "children"):
            refs = item.get(field)
            for j, ref in enumerate(refs if isinstance(refs, list) else []):
                if isinstance(ref, str) and (ref not in entry_ids or ref == own):
                    why = "the entry itself" if ref == own else "no entry of the document"
                    found.append(
                        Problem(path=f"$.entries[{i}].{field}[{j}]", message=f"`{ref}` names {why}")
                    )
        phase = item.get("phase_id")
        if isinstance(phase, str) and phase not in phase_ids:
            found.append(
                Problem(
                    path=f"$.entries[{i}].phase_id",
                    message=f"`{phase}` names no phase of the document",
                )
            )
    for i, item in phases:
        notes = item.get("memory")
        if isinstance(notes, list) and len(notes) > max_notes:
            found.append(
                Problem(
                    path=f"$.phases[{i}].memory",
                    message=f"at most {max_notes} memory notes per phase, not {len(notes)}",
                )
            )
    return found


def _cycles(raw: Any) -> list[Problem]:
    """The cycles ``depends_on`` or ``children`` form, each where it starts."""
    # Imported here: orchestrator.todo imports the response types, which include this module's.
    from orchestrator.todo import LINK_FIELDS, cycle_message, find_cycle

    entries = _items(raw, "entries")
    entry_ids, _ = _ids(entries, "entries")
    found: list[Problem] = []
    for field in LINK_FIELDS:
        graph: dict[str, list[str]] = {}
        for _, item in entries:
            own, refs = item.get("id"), item.get(field)
            if isinstance(own, str) and isinstance(refs, list):
                graph[own] = [r for r in refs if isinstance(r, str) and r in entry_ids and r != own]
        cycle = find_cycle(graph)
        if cycle:
            at = entry_ids[cycle[0]]
            found.append(
                Problem(path=f"$.entries[{at}].{field}", message=cycle_message(field, cycle))
            )
    return found


# Export


def export(plan: Plan, memory: Mapping[str, list[MemoryNote]]) -> PlanDocument:
    """The plan as a document; ``memory`` holds each phase's notes, oldest first."""
    phases = plan.ordered_phases()
    return PlanDocument(
        format=FORMAT,
        schema_version=SCHEMA_VERSION,
        project_context=plan.todo.project_context if plan.todo else "",
        budget=DocumentBudget(caps=plan.caps) if plan.caps != BudgetCaps() else None,
        phases=[_export_phase(p, memory.get(p.id, [])) for p in phases],
        entries=[
            _export_entry(e, set(plan.entries), set(plan.phases)) for e in plan.ordered_entries()
        ],
    )


def _export_phase(phase: Phase, notes: list[MemoryNote]) -> DocumentPhase:
    return DocumentPhase(
        id=phase.id,
        name=phase.name,
        description=phase.description,
        seq=phase.seq,
        status=phase.status,
        phase_rounds=phase.phase_rounds,
        container_id=phase.container_id,
        memory=[
            DocumentNote(text=n.text, sessionID=n.sessionID, created_at=n.created_at)
            for n in notes
            if n.text
        ],
    )


def _export_entry(entry: Entry, entries: set[str], phases: set[str]) -> DocumentEntry:
    status: DocumentStatus = "pending" if entry.status in ACTIVE else entry.status  # type: ignore[assignment]
    return DocumentEntry(
        id=entry.id,
        type=entry.type,
        content=entry.content,
        spec=entry.spec if entry.spec != Spec() else None,
        spec_frozen=entry.spec_frozen,
        status=status,
        priority=entry.priority,
        depends_on=[d for d in entry.depends_on if d in entries],
        children=[c for c in entry.children if c in entries],
        parallelizable=entry.parallelizable,
        parallel_group=entry.parallel_group,
        files=list(entry.files),
        budget_usd=entry.budget_usd,
        budget_rounds=entry.budget_rounds,
        budget_locked=entry.budget_locked,
        created_by=entry.created_by,
        phase_id=entry.phase_id if entry.phase_id in phases else None,
        summary=entry.summary,
        report=list(entry.report),
    )


def canonical(document: PlanDocument) -> bytes:
    """The document's canonical JSON: what a snapshot stores and its digest addresses."""
    return _encoder.encode(document)


def digest(canonical_json: bytes) -> str:
    return "sha256:" + hashlib.sha256(canonical_json).hexdigest()


def pretty(document: PlanDocument) -> bytes:
    """As exported: indented, one trailing newline (a file worth committing to a repo)."""
    return msgspec.json.format(_encoder.encode(document), indent=2) + b"\n"


# The JSON Schema


def json_schema() -> dict[str, Any]:
    schema = jsonschema.schema(PlanDocument)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:orchestrator:{FORMAT}:{SCHEMA_VERSION}",
        "title": f"Orchestrator TODO document, schema version {SCHEMA_VERSION}",
        "description": (__doc__ or "").strip(),
        **schema,
    }


def schema_json() -> bytes:
    """The schema as served and checked in (docs/todo-document.schema.json)."""
    encoded = msgspec.json.encode(json_schema(), order="sorted")
    return msgspec.json.format(encoded, indent=2) + b"\n"


if __name__ == "__main__":
    sys.stdout.buffer.write(schema_json())
