"""Service and workspace operations: health, config, events, the tool-call log, the debug
dump, questions, purge (API.md parts 1 and 2)."""

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from orchestrator import results as r
from orchestrator.events import QuestionItem, ToolRef
from orchestrator_sdk.inputs import QuestionItemInput, ToolCallInput, ToolRefInput
from orchestrator_sdk.operations import Call, decoded, fields, operation, stream, text
from orchestrator_sdk.sse import EVENTS, TOOL_CALLS, Event, LoggedCall
from orchestrator_sdk.streams import StreamCall

Json = dict[str, Any]


class WorkspaceOperations:
    @operation("GET", "/healthz", scoped=False)
    def healthz(self) -> Call[Json]:
        """``{"status": "ok"}`` while the process is up."""
        return Call(read=decoded(Json))

    @operation("GET", "/metrics", scoped=False)
    def metrics(self) -> Call[str]:
        """The replica's Prometheus metrics, as exposition text."""
        return Call(read=text)

    @operation("GET", "/readyz", scoped=False)
    def readyz(self) -> Call[Json]:
        """Whether Redis answers and projections keep up: the body says, 200 or 503 alike."""
        return Call(read=decoded(Json), also=(503,))

    @operation("GET", "/config")
    def get_config(self) -> Call[Json]:
        """The workspace's config object (``{}`` when never set)."""
        return Call(read=decoded(Json))

    @operation("PATCH", "/config")
    def update_config(
        self, patch: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Call[Json]:
        """Merge a JSON Merge Patch (None deletes a key, objects merge deeply); the merged
        config."""
        return Call(read=decoded(Json), body=dict(patch), idempotency_key=idempotency_key)

    @stream("/events")
    def stream_events(self, since_seq: int | None = None) -> StreamCall[Event]:
        """Every event: after ``since_seq`` (replayed, then live), or live from now. Yields
        ``Event`` and ``Reset`` items; reconnects by itself from the last seq seen."""
        return StreamCall(EVENTS, since_seq)

    @operation("GET", "/events/connections")
    def get_events_connections(self) -> Call[r.Count]:
        """Live ``/events`` subscribers of the workspace, over every replica."""
        return Call(read=decoded(r.Count))

    @operation("GET", "/log")
    def get_log(
        self,
        *,
        page: int | None = None,
        limit: int | None = None,
        tool: str | None = None,
        status: str | None = None,
        session_id: str | None = None,
        agent_name: str | None = None,
        entry_id: str | None = None,
        call_id: str | None = None,
        container_id: str | None = None,
        from_: int | None = None,
        to: int | None = None,
        order: Literal["asc", "desc"] | None = None,
    ) -> Call[r.LogPage]:
        """One page of the tool-call log, filtered (exact match; ``from_``/``to`` in epoch
        ms, inclusive)."""
        query = {
            "page": page,
            "limit": limit,
            "tool": tool,
            "status": status,
            "sessionID": session_id,
            "agentName": agent_name,
            "entryID": entry_id,
            "callID": call_id,
            "container_id": container_id,
            "from": from_,
            "to": to,
            "order": order,
        }
        return Call(read=decoded(r.LogPage), query=query)

    @operation("POST", "/log")
    def record_tool_calls(
        self,
        calls: ToolCallInput | Sequence[ToolCallInput],
        *,
        idempotency_key: str | None = None,
    ) -> Call[r.Recorded]:
        """Record one tool call, or a batch (all or none); the seq and callID of each."""
        body = calls if isinstance(calls, Mapping) else {"items": list(calls)}
        return Call(read=decoded(r.Recorded), body=body, idempotency_key=idempotency_key)

    @stream("/log/stream")
    def stream_log(self, since_seq: int | None = None) -> StreamCall[LoggedCall]:
        """Tool calls as they are recorded, as ``LoggedCall`` (seq and ToolCall) and
        ``Reset`` items; resumable like ``stream_events``."""
        return StreamCall(TOOL_CALLS, since_seq)

    @operation("GET", "/debug-dump")
    def get_debug_dump(self) -> Call[Json]:
        """Everything needed to reconstruct the live state, as one JSON object."""
        return Call(read=decoded(Json))

    @operation("GET", "/questions")
    def questions_list(self) -> Call[r.Questions]:
        """Every pending question, oldest first."""
        return Call(read=decoded(r.Questions))

    @operation("POST", "/questions")
    def questions_raise(
        self,
        session_id: str,
        questions: Sequence[QuestionItem | QuestionItemInput],
        tool: ToolRef | ToolRefInput,
        *,
        expires_in_ms: int | None = None,
        idempotency_key: str | None = None,
    ) -> Call[r.QuestionBody]:
        """An agent session asks a human."""
        body = fields(
            sessionID=session_id, questions=list(questions), tool=tool, expires_in_ms=expires_in_ms
        )
        return Call(read=decoded(r.QuestionBody), body=body, idempotency_key=idempotency_key)

    @operation("GET", "/questions/{questionID}")
    def questions_get_detail(self, question_id: str) -> Call[r.QuestionBody]:
        """One pending question (404 once answered, rejected or expired)."""
        return Call(read=decoded(r.QuestionBody), path={"questionID": question_id})

    @operation("POST", "/questions/{questionID}/answer")
    def questions_answer(
        self,
        question_id: str,
        answers: Sequence[Sequence[str]],
        *,
        idempotency_key: str | None = None,
    ) -> Call[r.Answered]:
        """Answer with one list of labels per question of it."""
        return Call(
            read=decoded(r.Answered),
            path={"questionID": question_id},
            body={"answers": [list(labels) for labels in answers]},
            idempotency_key=idempotency_key,
        )

    @operation("POST", "/questions/{questionID}/reject")
    def questions_reject(
        self, question_id: str, *, reason: str | None = None, idempotency_key: str | None = None
    ) -> Call[r.Rejected]:
        """Dismiss a question."""
        return Call(
            read=decoded(r.Rejected),
            path={"questionID": question_id},
            body=fields(reason=reason),
            idempotency_key=idempotency_key,
        )

    @operation("POST", "/purge")
    def purge(self, *, idempotency_key: str | None = None) -> Call[r.Purged]:
        """Clear the workspace's state (events, TODO, budgets, logs, questions), keeping its
        config; the executor is paused."""
        return Call(read=decoded(r.Purged), idempotency_key=idempotency_key)
