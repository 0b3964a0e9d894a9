"""The executor, worker leases, file locks and the budget."""

from collections.abc import Sequence

from orchestrator import results as r
from orchestrator_sdk.inputs import BudgetCapsPatch, CheckInput
from orchestrator_sdk.operations import Call, decoded, fields, operation, optional

L = "/executor/leases/{leaseID}"


class ExecutorOperations:
    @operation("GET", "/executor/status")
    def get_executor_status(self) -> Call[r.ExecutorBody]:
        return Call(read=decoded(r.ExecutorBody))

    @operation("POST", "/executor/start")
    def start_executor(self, *, idempotency_key: str | None = None) -> Call[r.Started]:
        return Call(read=decoded(r.Started), idempotency_key=idempotency_key)

    @operation("POST", "/executor/pause")
    def pause_executor(self, *, idempotency_key: str | None = None) -> Call[r.Paused]:
        return Call(read=decoded(r.Paused), idempotency_key=idempotency_key)

    @operation("POST", "/executor/resume")
    def resume_executor(self, *, idempotency_key: str | None = None) -> Call[r.Resumed]:
        return Call(read=decoded(r.Resumed), idempotency_key=idempotency_key)

    @operation("POST", "/executor/stop-all")
    def stop_all(self, *, idempotency_key: str | None = None) -> Call[r.Stopped]:
        """Stop, revoke every lease, put the entries being worked on back to pending."""
        return Call(read=decoded(r.Stopped), idempotency_key=idempotency_key)

    @operation("POST", "/executor/force-dispatch")
    def force_dispatch(self, *, idempotency_key: str | None = None) -> Call[r.Cycle]:
        """One dispatch cycle now, with why each pending entry was or was not dispatched."""
        return Call(read=decoded(r.Cycle), idempotency_key=idempotency_key)

    @operation("GET", "/executor/workers")
    def list_workers(self) -> Call[r.Workers]:
        return Call(read=decoded(r.Workers))

    @operation("POST", "/executor/claim")
    def claim(
        self, session_id: str, *, idempotency_key: str | None = None
    ) -> Call[r.Claimed | None]:
        """Lease the next dispatched entry to the session; None when there is nothing to
        claim. A session holding a lease gets that one back."""
        return Call(
            read=optional(r.Claimed),
            body={"sessionID": session_id},
            idempotency_key=idempotency_key,
        )

    @operation("POST", f"{L}/heartbeat")
    def heartbeat(self, lease_id: str, *, idempotency_key: str | None = None) -> Call[r.LeaseBody]:
        """Renew a lease (and its file locks)."""
        return Call(
            read=decoded(r.LeaseBody), path={"leaseID": lease_id}, idempotency_key=idempotency_key
        )

    @operation("POST", f"{L}/complete")
    def complete_lease(
        self,
        lease_id: str,
        *,
        summary: str | None = None,
        report: Sequence[CheckInput] = (),
        idempotency_key: str | None = None,
    ) -> Call[r.EntryBody]:
        """The work is done: the entry completes, the lease and its locks are released."""
        return Call(
            read=decoded(r.EntryBody),
            path={"leaseID": lease_id},
            body=fields(summary=summary, report=list(report) or None),
            idempotency_key=idempotency_key,
        )

    @operation("POST", f"{L}/fail")
    def fail_lease(
        self,
        lease_id: str,
        *,
        reason: str | None = None,
        retry: bool = True,
        idempotency_key: str | None = None,
    ) -> Call[r.EntryBody]:
        """The work failed: back to pending with the attempt counted (failed once attempts
        run out, or at once with ``retry=False``)."""
        return Call(
            read=decoded(r.EntryBody),
            path={"leaseID": lease_id},
            body=fields(reason=reason, retry=retry),
            idempotency_key=idempotency_key,
        )

    @operation("GET", "/executor/locks")
    def list_locks(self) -> Call[r.Locks]:
        return Call(read=decoded(r.Locks))

    @operation("GET", "/budget")
    def get_budget(self) -> Call[r.BudgetBody]:
        return Call(read=decoded(r.BudgetBody))

    @operation("PATCH", "/budget")
    def update_budget(
        self, caps: BudgetCapsPatch, *, idempotency_key: str | None = None
    ) -> Call[r.BudgetBody]:
        """Merge global caps (None removes one)."""
        return Call(read=decoded(r.BudgetBody), body=dict(caps), idempotency_key=idempotency_key)

    @operation("POST", "/usage")
    def report_usage(
        self,
        session_id: str,
        *,
        entry_id: str | None = None,
        cost_usd: float = 0.0,
        tokens: int = 0,
        rounds: int = 0,
        idempotency_key: str | None = None,
    ) -> Call[r.UsageBody]:
        """A worker reports spend (to the entry's too, with ``entry_id``)."""
        body = fields(
            sessionID=session_id, entryID=entry_id, cost_usd=cost_usd, tokens=tokens, rounds=rounds
        )
        return Call(read=decoded(r.UsageBody), body=body, idempotency_key=idempotency_key)
