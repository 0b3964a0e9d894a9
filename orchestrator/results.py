"""What commands and reads answer: the response bodies, as types.

The API encodes these, and ``api/openapi.py`` generates the OpenAPI document's schemas from
them, so the published contract and the bytes on the wire come from the same definitions.
"""

from typing import Any, Literal

import msgspec

from orchestrator.documents import PlanDocument
from orchestrator.events import PromptDispatched, Question, ToolCall
from orchestrator.model import (
    BudgetCaps,
    Entry,
    EntryVerdict,
    FileLock,
    Lease,
    MemoryNote,
    Phase,
    Spec,
)
from orchestrator.transfer import Snapshot


class Body(msgspec.Struct, kw_only=True):
    """Base of response bodies: every field is always present (``null`` when empty)."""


# Workspace


class Count(Body):
    count: int


class PageMeta(Body):
    page: int
    limit: int
    total: int
    pages: int


class LogPage(Body):
    items: list[ToolCall]
    meta: PageMeta


class RecordedCall(Body):
    seq: int
    callID: str


class Recorded(Body):
    items: list[RecordedCall]


class Questions(Body):
    questions: list[Question]


class QuestionBody(Body):
    question: Question


class Answered(Body):
    answered: bool


class Rejected(Body):
    rejected: bool


class Purged(Body):
    purged: list[str]


class EventFrame(Body):
    """The ``data:`` of an ``/events`` frame (its ``id:`` is the seq, ``event:`` the type)."""

    seq: int
    type: str
    payload: dict[str, Any]


class TodoEvents(Body):
    events: list[EventFrame]


# The Master TODO


class TodoDocument(Body):
    """``GET /todo``: entries by seq, phases by seq."""

    id: str | None
    version: int
    created_at: int | None
    project_context: str
    entries: list[Entry]
    phases: list[Phase]


class EntryBody(Body):
    entry: Entry


class EntriesBody(Body):
    entries: list[Entry]


class Deleted(Body):
    deleted: bool
    entryID: str


class SpecBody(Body):
    spec: Spec
    frozen: bool
    version: int


# Executor, workers, budget


class Started(Body):
    started: bool


class Paused(Body):
    paused: bool


class Resumed(Body):
    resumed: bool


class Stopped(Body):
    stopped: bool
    released: list[str]
    returned: list[str]


class Reason(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    message: str
    ids: list[str] = msgspec.field(default_factory=list)


class Diagnostic(Body):
    entryID: str
    dispatched: bool
    reasons: list[Reason]


class Cycle(Body):
    dispatched: list[str]
    diagnostics: list[Diagnostic]
    executor: str


class WorkerCounts(Body):
    active: int
    max: int
    leases: int


class ExecutorStatus(Body):
    status: Literal["stopped", "running", "paused"]
    reason: str | None
    started_at: int | None
    wall_ms: int
    dispatcher: str | None
    workers: WorkerCounts
    entries: dict[str, int]
    exceeded: list[str]


class ExecutorBody(Body):
    executor: ExecutorStatus


class LeaseView(Body):
    id: str
    entryID: str
    sessionID: str
    expires_at: int


class Claimed(Body):
    lease: LeaseView
    entry: Entry


class LeaseBody(Body):
    lease: LeaseView


class Workers(Body):
    workers: list[Lease]


class Locks(Body):
    locks: list[FileLock]


class UsageView(Body):
    cost_usd: float
    tokens: int
    tool_calls: int
    wall_ms: int
    workers: int
    max_workers: int


class BudgetView(Body):
    caps: BudgetCaps
    usage: UsageView
    exceeded: list[str]


class BudgetBody(Body):
    budget: BudgetView


class UsageBody(Body):
    usage: UsageView


# Phases and sessions


class PhaseBody(Body):
    phase: Phase


class Phases(Body):
    phases: list[Phase]


class Verified(Body):
    phase: Phase
    passed: bool
    results: list[EntryVerdict]


class Memory(Body):
    notes: list[MemoryNote]
    count: int
    limit: int


class NotesAdded(Body):
    notes: list[MemoryNote]
    count: int


class PromptBody(Body):
    prompt: PromptDispatched


class Session(Body):
    id: str
    tool_calls: int
    first_call_at: int | None
    last_call_at: int | None
    lease: Lease | None
    entryID: str | None
    phaseID: str | None


class Sessions(Body):
    sessions: list[Session]


class ErrorDetail(msgspec.Struct, frozen=True):
    code: str
    message: str
    details: dict[str, Any]


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error: a stable machine ``code``, a message saying what to fix, details."""

    error: ErrorDetail


# Vault and import


class Synced(Body):
    """``POST /vault/sync``: the snapshot, and whether this sync stored it (False: the
    latest snapshot already had this document)."""

    snapshot: Snapshot
    created: bool


class Snapshots(Body):
    snapshots: list[Snapshot]


class SnapshotBody(Body):
    snapshot: Snapshot
    document: PlanDocument


class ImportAccepted(Body):
    importJobID: str
    todoID: str
