"""Every Redis key the service uses, in one place.

All of a workspace's keys share the hash tag ``{<workspaceID>}`` so that a workspace lives in
one Redis Cluster slot and one Lua script may touch all of them.
"""

import hashlib
from dataclasses import dataclass

from orchestrator.ids import is_valid_id

LOG_FILTER_FIELDS = (
    "tool",
    "status",
    "sessionID",
    "agentName",
    "entryID",
    "callID",
    "container_id",
)


EXECUTORS = "orch:executors"
"""Set of the workspaces whose executor was started: every replica's dispatch loop walks it.
The one key outside a workspace's slot."""


TOKENS = "orch:tokens"
"""Hash: SHA-256 of an API token -> its record (JSON). Tokens themselves are never stored."""
TOKEN_IDS = "orch:tokens:ids"
"""Hash: token id -> the SHA-256 it is stored under (to list and revoke by id)."""


@dataclass(frozen=True, slots=True)
class WorkspaceKeys:
    workspace_id: str

    def __post_init__(self) -> None:
        # Ids reach key names only after this check: no key injection.
        if not is_valid_id(self.workspace_id):
            raise ValueError(f"invalid workspace id {self.workspace_id!r}")

    @property
    def prefix(self) -> str:
        return f"orch:{{{self.workspace_id}}}"

    # The event log and its bookkeeping.
    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def meta(self) -> str:
        """Hash: ``seq`` is the last allocated seq; it survives purge."""
        return f"{self.prefix}:meta"

    @property
    def versions(self) -> str:
        """Hash: entity name -> seq of the last event that changed it."""
        return f"{self.prefix}:versions"

    def idempotency(self, operation: str, key: str) -> str:
        # The client's key may hold ":", so as written it could name another operation's
        # record ("phase" with key "p1:k" is "phase:p1" with key "k"); hashed, it cannot.
        digest = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
        return f"{self.prefix}:idem:{operation}:{digest}"

    @property
    def checkpoints(self) -> str:
        """Hash: projection name -> seq of the last event it applied."""
        return f"{self.prefix}:checkpoints"

    @property
    def subscribers(self) -> str:
        """Hash: replica id -> ``<count>:<expires_at_ms>``."""
        return f"{self.prefix}:subscribers"

    # Read models.
    @property
    def config(self) -> str:
        return f"{self.prefix}:config"

    @property
    def log_calls(self) -> str:
        """Hash: seq -> ToolCall JSON."""
        return f"{self.prefix}:log:calls"

    @property
    def log_all(self) -> str:
        """Sorted set of every recorded call: member seq (zero-padded), score timestamp."""
        return f"{self.prefix}:log:all"

    def log_index(self, field: str, value: str) -> str:
        """Sorted set of the calls whose ``field`` equals ``value``."""
        return f"{self.prefix}:log:by:{field}:{value}"

    def log_status_tool(self, status: str, tool: str) -> str:
        """Sorted set of the calls with this ``status`` and ``tool``: the one composite
        index. Both fields have few values and the largest plain indexes, so intersecting
        theirs costs O(log size); every other combination has a small index to start from.
        (A status holds no ``:``, so the key names one pair.)"""
        return f"{self.prefix}:log:by:status+tool:{status}:{tool}"

    @property
    def log_call_ids(self) -> str:
        """Hash: callID -> the padded seq of its call, or ``*`` once the callID came again
        (its calls then have a ``log_index("callID", id)`` set). The callID index: a callID
        nearly always names one call, and a sorted set each would be a new key (and a
        registry entry) per call."""
        return f"{self.prefix}:log:callids"

    @property
    def log_indexes(self) -> str:
        """Set of every ``log_index`` key, so that purge and rebuild can drop them."""
        return f"{self.prefix}:log:indexes"

    @property
    def sessions(self) -> str:
        """Set of the session ids seen in tool calls and questions."""
        return f"{self.prefix}:sessions"

    @property
    def questions(self) -> str:
        """Hash: question id -> pending Question JSON."""
        return f"{self.prefix}:questions"

    @property
    def questions_order(self) -> str:
        """Sorted set: pending question id, score the seq that asked it (oldest first)."""
        return f"{self.prefix}:questions:order"

    @property
    def questions_expiry(self) -> str:
        """Sorted set: pending question id, score its expiry (epoch ms)."""
        return f"{self.prefix}:questions:expiry"

    # The plan: the Master TODO, phases, executor, leases, locks, budget.
    @property
    def plan(self) -> str:
        """Hash: ``version`` (seq of the last domain event), and the JSON of ``todo``,
        ``executor``, ``caps`` and ``usage``."""
        return f"{self.prefix}:plan"

    @property
    def entries(self) -> str:
        """Hash: entry id -> Entry JSON."""
        return f"{self.prefix}:todo:entries"

    @property
    def todo_events(self) -> str:
        """Sorted set: the TODO's own events as ``{seq,type,payload}`` JSON, score seq."""
        return f"{self.prefix}:todo:events"

    @property
    def phases(self) -> str:
        """Hash: phase id -> Phase JSON."""
        return f"{self.prefix}:phases"

    def phase_memory(self, phase_id: str) -> str:
        """List of a phase's memory notes (JSON), oldest first."""
        return f"{self.prefix}:phase:{phase_id}:memory"

    @property
    def phase_memories(self) -> str:
        """Set of every ``phase_memory`` key, so that purge and rebuild can drop them."""
        return f"{self.prefix}:phase:memories"

    @property
    def leases(self) -> str:
        """Hash: lease id -> Lease JSON (worker leases held now)."""
        return f"{self.prefix}:executor:leases"

    @property
    def locks(self) -> str:
        """Hash: file path -> FileLock JSON."""
        return f"{self.prefix}:executor:locks"

    @property
    def dispatcher(self) -> str:
        """String, with an expiry: the replica that dispatches this workspace now."""
        return f"{self.prefix}:executor:dispatcher"

    # Import jobs and the vault.
    @property
    def imports(self) -> str:
        """Hash: import job id -> ImportJob JSON (the imports read model)."""
        return f"{self.prefix}:imports"

    @property
    def vault_snapshots(self) -> str:
        """Hash: snapshot id -> Snapshot JSON (the Redis vault backend)."""
        return f"{self.prefix}:vault:snapshots"

    @property
    def vault_order(self) -> str:
        """List: snapshot ids, oldest first (the Redis vault backend)."""
        return f"{self.prefix}:vault:order"

    @property
    def vault_documents(self) -> str:
        """Hash: ``sha256:<hex>`` digest -> the document's canonical JSON (stored once)."""
        return f"{self.prefix}:vault:documents"

    def session(self, session_id: str) -> str:
        """Hash: one session's counters (tool calls, questions, prompts, first/last seq)."""
        return f"{self.prefix}:session:{session_id}"

    @property
    def caches(self) -> str:
        """Prefix of disposable query caches."""
        return f"{self.prefix}:cache"
