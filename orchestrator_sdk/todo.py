"""The Master TODO: the document, its events, entries, status, budgets and specs."""

from collections.abc import Sequence

from orchestrator import results as r
from orchestrator_sdk.inputs import EntryInput, EntryStatus, Priority, SpecInput
from orchestrator_sdk.operations import Call, decoded, fields, operation

E = "/todo/entries/{entryID}"


def _entry(
    entry_id: str, body: object = None, idempotency_key: str | None = None
) -> Call[r.EntryBody]:
    return Call(
        read=decoded(r.EntryBody),
        path={"entryID": entry_id},
        body=body,
        idempotency_key=idempotency_key,
    )


class TodoOperations:
    @operation("GET", "/todo")
    def get_todo(self) -> Call[r.TodoDocument]:
        """The TODO: entries by seq, phases by seq."""
        return Call(read=decoded(r.TodoDocument))

    @operation("PATCH", "/todo")
    def update_todo(
        self, project_context: str, *, idempotency_key: str | None = None
    ) -> Call[r.TodoDocument]:
        """Set the project context; the document."""
        body = {"project_context": project_context}
        return Call(read=decoded(r.TodoDocument), body=body, idempotency_key=idempotency_key)

    @operation("GET", "/todo/events")
    def get_todo_events(
        self, *, since_seq: int | None = None, limit: int | None = None
    ) -> Call[r.TodoEvents]:
        """The TODO's own ``todo.*`` events after ``since_seq``, up to ``limit`` (1 to 1000)."""
        return Call(read=decoded(r.TodoEvents), query={"since_seq": since_seq, "limit": limit})

    @operation("POST", "/todo/entries")
    def create_entries(
        self, entries: Sequence[EntryInput], *, idempotency_key: str | None = None
    ) -> Call[r.EntriesBody]:
        """Add entries (1 to 500, all or none)."""
        body = {"entries": list(entries)}
        return Call(read=decoded(r.EntriesBody), body=body, idempotency_key=idempotency_key)

    @operation("GET", E)
    def get_entry(self, entry_id: str) -> Call[r.EntryBody]:
        return _entry(entry_id)

    @operation("DELETE", E)
    def delete_entry(
        self, entry_id: str, *, force: bool = False, idempotency_key: str | None = None
    ) -> Call[r.Deleted]:
        """Delete an entry; ``force`` also drops it from its dependents and ends its lease."""
        return Call(
            read=decoded(r.Deleted),
            path={"entryID": entry_id},
            query={"force": force or None},
            idempotency_key=idempotency_key,
        )

    @operation("PATCH", f"{E}/status")
    def set_entry_status(
        self,
        entry_id: str,
        status: EntryStatus,
        *,
        version: int | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> Call[r.EntryBody]:
        """Move an entry by the status machine (409 ``ILLEGAL_TRANSITION`` otherwise)."""
        body = fields(status=status, version=version, reason=reason)
        return _entry(entry_id, body, idempotency_key)

    @operation("PATCH", f"{E}/rounds")
    def set_entry_rounds(
        self,
        entry_id: str,
        budget_rounds: int | None,
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Call[r.EntryBody]:
        """Set ``budget_rounds`` (None: unbounded)."""
        body = {"budget_rounds": budget_rounds, **fields(version=version)}
        return _entry(entry_id, body, idempotency_key)

    @operation("PATCH", f"{E}/priority")
    def set_entry_priority(
        self,
        entry_id: str,
        priority: Priority,
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Call[r.EntryBody]:
        """Set the priority: ``low``, ``medium``, ``high`` or ``critical`` (dispatched
        first)."""
        return _entry(entry_id, fields(priority=priority, version=version), idempotency_key)

    @operation("PATCH", f"{E}/budget")
    def set_entry_budget(
        self,
        entry_id: str,
        budget_usd: float | None,
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Call[r.EntryBody]:
        """Set ``budget_usd`` (None: unbounded)."""
        body = {"budget_usd": budget_usd, **fields(version=version)}
        return _entry(entry_id, body, idempotency_key)

    @operation("POST", f"{E}/budget/lock")
    def lock_entry_budget(
        self, entry_id: str, *, idempotency_key: str | None = None
    ) -> Call[r.EntryBody]:
        """From now on the entry's ``budget_usd`` and ``budget_rounds`` cannot change."""
        return _entry(entry_id, None, idempotency_key)

    @operation("GET", f"{E}/spec")
    def get_entry_spec(self, entry_id: str) -> Call[r.SpecBody]:
        return Call(read=decoded(r.SpecBody), path={"entryID": entry_id})

    @operation("PUT", f"{E}/spec")
    def put_entry_spec(
        self,
        entry_id: str,
        spec: SpecInput,
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Call[r.EntryBody]:
        """Replace the spec: what is not given is empty; each change counts one
        ``revision`` (409 ``SPEC_FROZEN`` once frozen)."""
        body = {**spec, **fields(version=version)}
        return _entry(entry_id, body, idempotency_key)

    @operation("POST", f"{E}/spec/freeze")
    def freeze_entry_spec(
        self, entry_id: str, *, idempotency_key: str | None = None
    ) -> Call[r.EntryBody]:
        return _entry(entry_id, None, idempotency_key)
