"""The shapes of request bodies an SDK caller builds, as ``TypedDict``s: plain dicts at run
time, checked by a type checker. The service validates them (422 names what to fix).

Answers are typed by the service's own types (``orchestrator.results``, ``orchestrator.model``,
``orchestrator.events``); the inputs' types live with the server code that needs Redis, so
they are described here instead.
"""

from typing import Any, Literal, NotRequired, Required, TypedDict

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
PhaseStatus = Literal["pending", "active", "completed", "failed"]
Priority = Literal["low", "medium", "high", "critical"]


class SpecInput(TypedDict, total=False):
    """The published spec object; the service sets ``last_edited`` and ``revision`` (those
    sent are ignored), and ``authored_by`` defaults to the token's name."""

    requirements: str
    acceptance_criteria: list[str]
    files_to_create: list[str]
    files_to_modify: list[str]
    patterns: str
    api_contract: str
    examples: str
    integration_points: str
    authored_by: str
    last_edited: int | None
    revision: int


class EntryInput(TypedDict, total=False):
    """A new TODO entry: only ``content`` is required."""

    content: Required[str]
    id: str  # given ids let entries of one request depend on each other
    type: str
    spec: SpecInput
    spec_frozen: bool
    priority: Priority  # default "medium"
    depends_on: list[str]
    children: list[str]
    parallelizable: bool
    parallel_group: str
    files: list[str]
    budget_usd: float
    budget_rounds: int
    created_by: str
    phase_id: str


class ToolCallInput(TypedDict, total=False):
    """A tool call as an agent records it; the service fills in what is left out."""

    tool: Required[str]
    sessionID: Required[str]
    agentName: Required[str]
    status: Required[str]
    callID: str
    entryID: str
    title: str
    timestamp: int
    duration: int
    corrections: list[Any]
    target: str
    container_id: str
    workspaceID: str


class OptionInput(TypedDict):
    label: str
    description: NotRequired[str]


class QuestionItemInput(TypedDict):
    question: str
    header: str
    options: list[OptionInput]
    multiple: NotRequired[bool]
    custom: NotRequired[bool]


class ToolRefInput(TypedDict):
    messageID: str
    callID: str


class CheckInput(TypedDict):
    """A worker's report on one acceptance criterion."""

    criterion: str
    passed: bool
    evidence: NotRequired[str]


class NoteInput(TypedDict):
    text: str
    sessionID: NotRequired[str]


class BudgetCapsPatch(TypedDict, total=False):
    """Caps to merge; None removes one."""

    cap_usd: float | None
    max_tokens: int | None
    max_tool_calls: int | None
    max_wall_ms: int | None
    max_workers: int | None
