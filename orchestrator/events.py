"""The one union of event types, and the envelope they travel in.

A stream entry holds ``type`` (the event type) and ``payload`` (its JSON), so that
``redis-cli XRANGE`` shows readable events. Schema evolution: new fields get defaults,
type names are never renamed, field types never change.
"""

from typing import Annotated, Any, ClassVar, Final, Literal

import msgspec

from orchestrator.fields import EpochMs, Name, SessionID, Status, Text
from orchestrator.model import (
    BudgetCaps,
    Entry,
    EntryVerdict,
    ExecutorState,
    FileLock,
    Lease,
    MemoryNote,
    Phase,
    TodoMeta,
    Usage,
)
from orchestrator.transfer import ImportJob, Snapshot
from orchestrator.upcast import current

__all__ = ["EpochMs", "Name", "SessionID", "Status", "Text"]


class ToolCall(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    """One tool call made by an agent session; the payload of ``tool.call``."""

    type: ClassVar[str] = "tool.call"

    tool: Name
    sessionID: SessionID
    callID: Name
    entryID: Name | None = None
    title: Text | None = None
    timestamp: EpochMs
    duration: Annotated[int, msgspec.Meta(ge=0, le=2**53)]
    status: Status
    corrections: list[Any]
    target: Text | None = None
    agentName: Name
    container_id: Name | None = None
    workspaceID: str


class QuestionOption(msgspec.Struct, frozen=True, omit_defaults=False):
    label: Name
    description: Text = ""


class QuestionItem(msgspec.Struct, frozen=True):
    question: Text
    header: Annotated[str, msgspec.Meta(max_length=256)]
    options: Annotated[list[QuestionOption], msgspec.Meta(max_length=64)]
    multiple: bool = False
    custom: bool = False


class ToolRef(msgspec.Struct, frozen=True):
    messageID: Name
    callID: Name


class Question(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    """A question an agent asks a human; the payload of ``question.asked``.

    ``expires_at`` is present only on questions raised with ``expires_in_ms``.
    """

    type: ClassVar[str] = "question.asked"

    id: str
    sessionID: SessionID
    questions: list[QuestionItem]
    tool: ToolRef
    expires_at: EpochMs | None = None


class QuestionAnswered(msgspec.Struct, frozen=True):
    type: ClassVar[str] = "question.answered"

    id: str
    sessionID: str
    answers: list[list[str]]


class QuestionRejected(msgspec.Struct, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "question.rejected"

    id: str
    sessionID: str
    reason: str | None = None


class QuestionExpired(msgspec.Struct, frozen=True):
    type: ClassVar[str] = "question.expired"

    id: str
    sessionID: str
    expires_at: int


class ConfigUpdated(msgspec.Struct, frozen=True, omit_defaults=True):
    """``patch`` as sent (JSON Merge Patch), merged into the config by the projection.

    Events recorded by earlier versions also carry ``config``, the whole merged config
    (each of them: the log grew with the config's size times its changes); a reader takes
    it as is.
    """

    type: ClassVar[str] = "config.updated"

    patch: dict[str, Any]
    config: dict[str, Any] | None = None


class OrchestrationPurged(msgspec.Struct, frozen=True, omit_defaults=True):
    """Always the first event after a purge; seq continues from before it.

    ``config`` carries the kept config over the purge: the events that built it are gone,
    so a rebuild from the log must find it here.
    """

    type: ClassVar[str] = "orchestration.purged"

    purged: list[str]
    config: dict[str, Any] | None = None
    executor: ExecutorState | None = None  # kept over the purge, paused if it was running


class PlanDelta(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What a domain event changed, as it is after the event (event-carried state).

    Every domain event extends this: it names what happened in its own fields, and carries
    the resulting state of what it touched here, so that folding the log (the projection,
    ``orchestrator.plan.evolve``) needs no decision of its own.
    """

    todo: TodoMeta | None = None
    entries: list[Entry] = msgspec.field(default_factory=list)
    deleted: list[str] = msgspec.field(default_factory=list)  # entry ids
    phases: list[Phase] = msgspec.field(default_factory=list)
    leases: list[Lease] = msgspec.field(default_factory=list)
    ended: list[str] = msgspec.field(default_factory=list)  # lease ids
    locks: list[FileLock] = msgspec.field(default_factory=list)
    unlocked: list[str] = msgspec.field(default_factory=list)  # files
    caps: BudgetCaps | None = None
    usage: Usage | None = None
    executor: ExecutorState | None = None


class EntryEvent(PlanDelta, kw_only=True, frozen=True, omit_defaults=True):
    entryID: str


class TodoUpdated(PlanDelta, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "todo.updated"


class EntryCreated(EntryEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "todo.created"


class EntryDispatched(EntryEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "todo.dispatched"


class EntryStarted(EntryEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "todo.started"

    sessionID: str
    leaseID: str


class EntryStatusChanged(EntryEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "todo.status_changed"

    from_: str = msgspec.field(name="from")
    to: str
    reason: str | None = None


class EntryCompleted(EntryEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "todo.completed"

    sessionID: str | None = None


class EntryFailed(EntryEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "todo.failed"

    reason: str


class EntryDeleted(EntryEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "todo.deleted"

    forced: bool = False


class SpecUpdated(EntryEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "todo.spec_updated"


class SpecFrozen(EntryEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "todo.spec_frozen"


class PriorityChanged(EntryEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "todo.priority_changed"


class RoundsChanged(EntryEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "todo.rounds_changed"


class EntryBudgetChanged(EntryEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "todo.budget_changed"


class EntryBudgetLocked(EntryEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "todo.budget_locked"


class ExecutorStarted(PlanDelta, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "executor.started"


class ExecutorPaused(PlanDelta, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "executor.paused"

    reason: str


class ExecutorResumed(PlanDelta, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "executor.resumed"


class ExecutorStopped(PlanDelta, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "executor.stopped"


class LeaseEvent(PlanDelta, kw_only=True, frozen=True, omit_defaults=True):
    leaseID: str
    entryID: str
    sessionID: str


class LeaseGranted(LeaseEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "lease.granted"


class LeaseRenewed(LeaseEvent, kw_only=True, frozen=True, omit_defaults=True):
    """A heartbeat: the lease and its file locks run until the new ``expires_at``."""

    type: ClassVar[str] = "lease.renewed"

    expires_at: int


class LeaseExpired(LeaseEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "lease.expired"


class LeaseReleased(LeaseEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "lease.released"

    outcome: Literal["completed", "failed", "stopped", "revoked"]


class LocksAcquired(LeaseEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "lock.acquired"

    files: list[str]


class LocksReleased(LeaseEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "lock.released"

    files: list[str]
    reason: str


class BudgetUpdated(PlanDelta, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "budget.updated"


class UsageReported(PlanDelta, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "usage.reported"

    sessionID: str
    entryID: str | None = None
    cost_usd: float
    tokens: int
    rounds: int = 0


class BudgetExceeded(PlanDelta, kw_only=True, frozen=True, omit_defaults=True):
    """A cap is spent. ``scope`` is ``global`` (the executor pauses) or ``entry`` (the entry
    is blocked)."""

    type: ClassVar[str] = "budget.exceeded"

    scope: Literal["global", "entry"]
    cap: str
    limit: float
    spent: float
    entryID: str | None = None


class PhaseEvent(PlanDelta, kw_only=True, frozen=True, omit_defaults=True):
    phaseID: str


class PhaseCreated(PhaseEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "phase.created"


class PhaseUpdated(PhaseEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "phase.updated"


class PhaseStatusChanged(PhaseEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "phase.status_changed"

    from_: str = msgspec.field(name="from")
    to: str
    reason: str | None = None


class PhaseVerified(PhaseEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "phase.verified"

    passed: bool
    results: list[EntryVerdict]


class MemoryAdded(PhaseEvent, kw_only=True, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "phase.memory_added"

    notes: list[MemoryNote]


class PromptDispatched(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A prompt sent to an agent session (it receives it on ``/events``)."""

    type: ClassVar[str] = "prompt.dispatched"

    id: str
    sessionID: str
    text: str
    phaseID: str | None = None
    entryID: str | None = None
    created_at: int


class ImportEvent(msgspec.Struct, kw_only=True, frozen=True):
    """An import job moved on; ``job`` is its whole state after the event."""

    jobID: str
    job: ImportJob


class ImportStarted(ImportEvent, kw_only=True, frozen=True):
    type: ClassVar[str] = "import.started"


class ImportProgress(ImportEvent, kw_only=True, frozen=True):
    type: ClassVar[str] = "import.progress"


class ImportCompleted(ImportEvent, kw_only=True, frozen=True):
    """Appended together with the events that add the document to the plan."""

    type: ClassVar[str] = "import.completed"


class ImportFailed(ImportEvent, kw_only=True, frozen=True):
    type: ClassVar[str] = "import.failed"


class VaultSynced(msgspec.Struct, kw_only=True, frozen=True):
    """A new snapshot of the TODO document was stored in the vault."""

    type: ClassVar[str] = "vault.synced"

    snapshot: Snapshot
    backend: str


DOMAIN_EVENTS: Final = (
    TodoUpdated,
    EntryCreated,
    EntryDispatched,
    EntryStarted,
    EntryStatusChanged,
    EntryCompleted,
    EntryFailed,
    EntryDeleted,
    SpecUpdated,
    SpecFrozen,
    PriorityChanged,
    RoundsChanged,
    EntryBudgetChanged,
    EntryBudgetLocked,
    ExecutorStarted,
    ExecutorPaused,
    ExecutorResumed,
    ExecutorStopped,
    LeaseGranted,
    LeaseRenewed,
    LeaseExpired,
    LeaseReleased,
    LocksAcquired,
    LocksReleased,
    BudgetUpdated,
    UsageReported,
    BudgetExceeded,
    PhaseCreated,
    PhaseUpdated,
    PhaseStatusChanged,
    PhaseVerified,
    MemoryAdded,
)

Payload = (
    ToolCall
    | Question
    | QuestionAnswered
    | QuestionRejected
    | QuestionExpired
    | ConfigUpdated
    | OrchestrationPurged
    | PromptDispatched
    | TodoUpdated
    | EntryCreated
    | EntryDispatched
    | EntryStarted
    | EntryStatusChanged
    | EntryCompleted
    | EntryFailed
    | EntryDeleted
    | SpecUpdated
    | SpecFrozen
    | PriorityChanged
    | RoundsChanged
    | EntryBudgetChanged
    | EntryBudgetLocked
    | ExecutorStarted
    | ExecutorPaused
    | ExecutorResumed
    | ExecutorStopped
    | LeaseGranted
    | LeaseRenewed
    | LeaseExpired
    | LeaseReleased
    | LocksAcquired
    | LocksReleased
    | BudgetUpdated
    | UsageReported
    | BudgetExceeded
    | PhaseCreated
    | PhaseUpdated
    | PhaseStatusChanged
    | PhaseVerified
    | MemoryAdded
    | ImportStarted
    | ImportProgress
    | ImportCompleted
    | ImportFailed
    | VaultSynced
)

PAYLOAD_TYPES: Final[dict[str, type[Payload]]] = {
    cls.type: cls
    for cls in (
        ToolCall,
        Question,
        QuestionAnswered,
        QuestionRejected,
        QuestionExpired,
        ConfigUpdated,
        OrchestrationPurged,
        PromptDispatched,
        *DOMAIN_EVENTS,
        ImportStarted,
        ImportProgress,
        ImportCompleted,
        ImportFailed,
        VaultSynced,
    )
}
DOMAIN_TYPES: Final = frozenset(cls.type for cls in DOMAIN_EVENTS)

_DECODERS: Final = {name: msgspec.json.Decoder(cls) for name, cls in PAYLOAD_TYPES.items()}
_ENCODER: Final = msgspec.json.Encoder()


class StoredEvent(msgspec.Struct, frozen=True):
    """An event as read back from the log: its seq, type and payload JSON (undecoded)."""

    seq: int
    type: str
    payload: msgspec.Raw

    def decode(self) -> Payload | None:
        """The typed payload, or None for a type this version does not know."""
        decoder = _DECODERS.get(self.type)
        return None if decoder is None else decoder.decode(self.current_payload())

    def current_payload(self) -> bytes:
        """The payload JSON in today's shapes: a domain event recorded by an earlier version
        is upcast (``orchestrator.upcast``); the log itself is never rewritten."""
        raw = bytes(self.payload)
        return current(raw) if self.type in DOMAIN_TYPES else raw


class NewEvent(msgspec.Struct, frozen=True):
    """An event about to be appended. ``entities`` names what it changes (for versions)."""

    type: str
    payload: bytes
    entities: tuple[str, ...] = ()


def new_event(payload: Payload, *entities: str) -> NewEvent:
    return NewEvent(type=payload.type, payload=_ENCODER.encode(payload), entities=entities)


def encode(value: object) -> bytes:
    return _ENCODER.encode(value)
