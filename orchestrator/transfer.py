"""What moving a plan in and out of a workspace records: vault snapshots, import jobs, and the
problems found in a document. Events carry these whole (``vault.synced``, ``import.*``), so
the imports read model only stores them."""

from typing import Literal

import msgspec

ImportStatus = Literal["running", "completed", "failed"]
SourceKind = Literal["repo", "document", "snapshot"]


class Problem(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One thing wrong with a document: where (a JSON path into it) and what. ``line`` is the
    line of a Markdown document the path came from."""

    path: str
    message: str
    line: int | None = None


class ImportSource(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Where an import reads its document. ``repoUrl`` is stored without credentials."""

    kind: SourceKind
    repoUrl: str | None = None
    ref: str | None = None
    path: str | None = None  # the file asked for in the repository
    file: str | None = None  # the file the document was found in
    snapshotID: str | None = None
    format: Literal["json", "markdown"] | None = None


class Remapped(msgspec.Struct, kw_only=True, frozen=True):
    """Ids of the document that were taken in the workspace: old id -> the id minted for it."""

    entries: dict[str, str] = msgspec.field(default_factory=dict)
    phases: dict[str, str] = msgspec.field(default_factory=dict)


class ImportJob(msgspec.Struct, kw_only=True, frozen=True):
    """An import job as of its last event: every field is present (``null`` when empty)."""

    id: str
    status: ImportStatus = "running"
    progress: int = 0  # 0..100
    stage: str = "queued"
    error: str | None = None
    problems: list[Problem] = msgspec.field(default_factory=list)
    todoID: str
    source: ImportSource
    entries: int = 0  # entries imported
    phases: int = 0  # phases imported
    remapped: Remapped = Remapped()
    created_at: int
    updated_at: int


class Snapshot(msgspec.Struct, kw_only=True, frozen=True):
    """A stored version of the workspace's TODO document. ``digest`` addresses its content:
    a sync whose document has the digest of the latest snapshot stores nothing."""

    id: str
    version: int  # 1, 2, ... per workspace
    digest: str  # "sha256:<hex>" of the document's canonical JSON
    created_at: int
    todoID: str | None
    todo_version: int  # the TODO's version (seq of its last domain event) when taken
    entries: int
    phases: int
    bytes: int
