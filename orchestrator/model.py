"""The orchestration domain's state: the Master TODO, its entries and phases, the executor,
worker leases, file locks and budgets.

These are the shapes the API serves and the events carry: every domain event carries the
state of what it changed, as it is after the event (see ``orchestrator.plan``).
"""

from typing import Annotated, Final, Literal

import msgspec

from orchestrator.fields import Name, Text

Money = Annotated[float, msgspec.Meta(ge=0, le=1e9)]
Count = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
FilePath = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
FileList = Annotated[list[FilePath], msgspec.Meta(max_length=256)]

# The product's published priorities; the executor dispatches the most urgent first.
Priority = Literal["low", "medium", "high", "critical"]
PRIORITIES: Final[tuple[Priority, ...]] = ("critical", "high", "medium", "low")
URGENCY: Final[dict[str, int]] = {p: rank for rank, p in enumerate(PRIORITIES)}

EntryStatus = Literal[
    "pending",
    "dispatched",
    "in_progress",
    "awaiting_input",
    "verifying",
    "completed",
    "failed",
    "blocked",
    "cancelled",
]

# The status machine, as a table: status -> the statuses it may move to.
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "pending": frozenset({"dispatched", "blocked", "cancelled"}),
    "dispatched": frozenset({"in_progress", "pending", "blocked", "failed", "cancelled"}),
    "in_progress": frozenset(
        {"awaiting_input", "verifying", "completed", "failed", "blocked", "pending", "cancelled"}
    ),
    "awaiting_input": frozenset({"in_progress", "failed", "blocked", "pending", "cancelled"}),
    # Back to pending too: a verifying worker may fail (retry) or die (lease expiry).
    "verifying": frozenset(
        {"completed", "failed", "in_progress", "pending", "blocked", "cancelled"}
    ),
    "blocked": frozenset({"pending", "cancelled"}),
    "failed": frozenset({"pending", "cancelled"}),
    "completed": frozenset(),
    "cancelled": frozenset(),
}
TERMINAL: Final = frozenset(s for s, targets in TRANSITIONS.items() if not targets)
# Statuses in which an entry occupies a worker slot.
ACTIVE: Final = frozenset({"dispatched", "in_progress", "awaiting_input", "verifying"})


class SpecFields(msgspec.Struct, kw_only=True, frozen=True):
    """What a spec's author writes: the published spec less what the server owns."""

    requirements: Text = ""
    acceptance_criteria: Annotated[list[Text], msgspec.Meta(max_length=64)] = msgspec.field(
        default_factory=list
    )
    files_to_create: FileList = msgspec.field(default_factory=list)
    files_to_modify: FileList = msgspec.field(default_factory=list)
    patterns: Text = ""
    api_contract: Text = ""
    examples: Text = ""
    integration_points: Text = ""
    authored_by: Name | None = None


class Spec(SpecFields, kw_only=True, frozen=True):
    """What the entry must achieve (the product's published spec): verify checks its
    ``acceptance_criteria``; ``last_edited`` and ``revision`` (the number of edits) are the
    server's."""

    last_edited: int | None = None
    revision: int = 0


class Check(msgspec.Struct, kw_only=True, frozen=True):
    """A worker's report on one acceptance criterion."""

    criterion: Text
    passed: bool
    evidence: Text = ""


class Entry(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    seq: int  # the entry's number in the TODO (1, 2, ...), never reused
    type: Name = "task"
    content: Text
    spec: Spec = Spec()
    spec_frozen: bool = False
    status: EntryStatus = "pending"
    priority: Priority = "medium"
    depends_on: list[str] = msgspec.field(default_factory=list)
    children: list[str] = msgspec.field(default_factory=list)
    parallelizable: bool = True
    parallel_group: str | None = None
    files: list[str] = msgspec.field(default_factory=list)
    budget_usd: float | None = None
    budget_locked: bool = False
    spent_usd: float = 0.0
    tokens: int = 0
    budget_rounds: int | None = None
    rounds_completed: int = 0
    attempts: int = 0
    created_by: str | None = None
    assigned_to: str | None = None
    session_ids: list[str] = msgspec.field(default_factory=list)
    phase_id: str | None = None
    report: list[Check] = msgspec.field(default_factory=list)
    summary: str | None = None
    verification: Literal["PASS", "FAIL"] | None = None
    created_at: int
    updated_at: int
    version: int = 1

    def locked_files(self) -> list[str]:
        """The files a worker on this entry locks: its own and those its spec names."""
        return sorted({*self.files, *self.spec.files_to_create, *self.spec.files_to_modify})


class TodoMeta(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    created_at: int
    project_context: str = ""
    next_seq: int = 1  # the seq the next entry gets


PhaseStatus = Literal["pending", "active", "completed", "failed"]
PHASE_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "pending": frozenset({"active"}),
    "active": frozenset({"pending", "completed", "failed"}),
    "failed": frozenset({"active"}),
    "completed": frozenset(),
}


class EntryVerdict(msgspec.Struct, frozen=True):
    entryID: str
    result: Literal["PASS", "FAIL"]
    reasons: list[str]


class Verification(msgspec.Struct, kw_only=True, frozen=True):
    passed: bool
    at: int
    results: list[EntryVerdict]


class Phase(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    name: Name
    description: Text = ""
    seq: int  # the phase's place in the plan, 0-based: the list is in seq order
    status: PhaseStatus = "pending"
    phase_rounds: int | None = None  # verify rounds the phase may take; None: unbounded
    rounds_completed: int = 0
    container_id: str | None = None  # the container the phase's work runs in
    session_id: str | None = None  # the orchestrator session that drives the phase
    memory_count: int = 0
    verification: Verification | None = None
    created_at: int
    updated_at: int
    version: int = 1


class MemoryNote(msgspec.Struct, kw_only=True, frozen=True):
    text: Text
    sessionID: str | None = None
    created_at: int


class Lease(msgspec.Struct, kw_only=True, frozen=True):
    """A worker session's hold on a dispatched entry, renewed by heartbeat."""

    id: str
    entryID: str
    sessionID: str
    granted_at: int
    renewed_at: int
    expires_at: int
    files: list[str] = msgspec.field(default_factory=list)


class FileLock(msgspec.Struct, kw_only=True, frozen=True):
    file: str
    leaseID: str
    entryID: str
    sessionID: str
    expires_at: int


class BudgetCaps(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Global caps; an absent cap does not limit."""

    cap_usd: Money | None = None
    max_tokens: Count | None = None
    max_tool_calls: Count | None = None
    max_wall_ms: Count | None = None
    max_workers: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None


class Usage(msgspec.Struct, kw_only=True, frozen=True):
    """Spend reported by workers since the last purge."""

    cost_usd: float = 0.0
    tokens: int = 0
    reports: int = 0


ExecutorStatus = Literal["stopped", "running", "paused"]


class ExecutorState(msgspec.Struct, kw_only=True, frozen=True):
    status: ExecutorStatus = "stopped"
    reason: str | None = None
    started_at: int | None = None
    running_since: int | None = None  # while running: when the current run began
    ran_ms: int = 0  # wall time spent running before ``running_since``

    def wall_ms(self, now: int) -> int:
        return self.ran_ms + (now - self.running_since if self.running_since is not None else 0)


class Plan(msgspec.Struct, kw_only=True):
    """Everything the domain decides on in one workspace, as of ``version`` (the seq of the
    last domain event). Commands load it whole, decide, and append expecting ``version``."""

    version: int = 0
    todo: TodoMeta | None = None
    entries: dict[str, Entry] = msgspec.field(default_factory=dict)
    phases: dict[str, Phase] = msgspec.field(default_factory=dict)
    leases: dict[str, Lease] = msgspec.field(default_factory=dict)
    locks: dict[str, FileLock] = msgspec.field(default_factory=dict)
    caps: BudgetCaps = BudgetCaps()
    usage: Usage = Usage()
    executor: ExecutorState = ExecutorState()
    tool_calls: int = 0  # calls recorded since the last purge (from the log read model)

    def ordered_entries(self) -> list[Entry]:
        return sorted(self.entries.values(), key=lambda e: e.seq)

    def ordered_phases(self) -> list[Phase]:
        return sorted(self.phases.values(), key=lambda p: (p.seq, p.created_at, p.id))

    def lease_of(self, session_id: str) -> Lease | None:
        return next(
            (lease for lease in self.leases.values() if lease.sessionID == session_id), None
        )
