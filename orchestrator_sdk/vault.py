"""The vault (the TODO as a portable document, and its snapshots) and import jobs."""

from collections.abc import Mapping
from typing import Any

from orchestrator import results as r
from orchestrator.documents import PlanDocument
from orchestrator.transfer import ImportJob
from orchestrator_sdk.operations import Call, decoded, fields, operation, text

MARKDOWN = {"format": "markdown"}


class VaultOperations:
    @operation("GET", "/vault/export")
    def export_todo(self) -> Call[PlanDocument]:
        """The TODO as a portable document (what ``start_import`` reads)."""
        return Call(read=decoded(PlanDocument))

    @operation("GET", "/vault/export")
    def export_todo_markdown(self) -> Call[str]:
        """The TODO as a Markdown checklist."""
        return Call(read=text, query=MARKDOWN)

    @operation("GET", "/vault/schema")
    def get_document_schema(self) -> Call[dict[str, Any]]:
        """The JSON Schema of the TODO document."""
        return Call(read=decoded(dict[str, Any]))

    @operation("POST", "/vault/sync")
    def sync_vault(self, *, idempotency_key: str | None = None) -> Call[r.Synced]:
        """Store a snapshot of the TODO (``created`` False: the latest one already had it)."""
        return Call(read=decoded(r.Synced), idempotency_key=idempotency_key)

    @operation("GET", "/vault")
    def list_snapshots(self) -> Call[r.Snapshots]:
        """The vault's snapshots, oldest first."""
        return Call(read=decoded(r.Snapshots))

    @operation("GET", "/vault/{snapshotID}")
    def get_snapshot(self, snapshot_id: str) -> Call[r.SnapshotBody]:
        """One snapshot with its document."""
        return Call(read=decoded(r.SnapshotBody), path={"snapshotID": snapshot_id})

    @operation("GET", "/vault/{snapshotID}")
    def get_snapshot_markdown(self, snapshot_id: str) -> Call[str]:
        """One snapshot's document as a Markdown checklist."""
        return Call(read=text, path={"snapshotID": snapshot_id}, query=MARKDOWN)

    @operation("POST", "/import")
    def start_import(
        self,
        *,
        repo_url: str | None = None,
        ref: str | None = None,
        path: str | None = None,
        document: PlanDocument | Mapping[str, Any] | str | None = None,
        snapshot_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Call[r.ImportAccepted]:
        """Import a TODO document in the background, from exactly one source: a git
        repository (``repo_url``, with ``ref`` and ``path``), a ``document`` (JSON, or a
        Markdown checklist as a string) or a vault snapshot. Follow it with ``get_import``."""
        body = fields(
            repoUrl=repo_url,
            ref=ref,
            path=path,
            document=dict(document) if isinstance(document, Mapping) else document,
            snapshotID=snapshot_id,
        )
        return Call(read=decoded(r.ImportAccepted), body=body, idempotency_key=idempotency_key)

    @operation("GET", "/import/{jobID}")
    def get_import(self, job_id: str) -> Call[ImportJob]:
        """An import job: running, completed or failed, with its progress (0 to 100)."""
        return Call(read=decoded(ImportJob), path={"jobID": job_id})
