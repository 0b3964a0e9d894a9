"""The questions agents ask humans: raise, answer, reject, expire."""

from typing import Annotated, Any

import msgspec

from orchestrator.clock import now_ms
from orchestrator.context import Orchestrator
from orchestrator.errors import InvalidInput, NotFound, TooMany, ValidationFailed
from orchestrator.eventlog import Idempotency, VersionConflict
from orchestrator.events import (
    Question,
    QuestionAnswered,
    QuestionExpired,
    QuestionItem,
    QuestionRejected,
    SessionID,
    ToolRef,
    new_event,
)
from orchestrator.ids import mint
from orchestrator.model import Plan
from orchestrator.plan import Decision
from orchestrator.rules import move

MAX_EXPIRY_MS = 7 * 24 * 3600 * 1000


class QuestionInput(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    sessionID: SessionID
    questions: Annotated[list[QuestionItem], msgspec.Meta(min_length=1, max_length=16)]
    tool: ToolRef
    expires_in_ms: Annotated[int, msgspec.Meta(ge=1, le=MAX_EXPIRY_MS)] | None = None


class AnswerInput(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    answers: list[list[str]]


class RejectInput(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    reason: Annotated[str, msgspec.Meta(max_length=4096)] | None = None


def check_question(given: QuestionInput) -> None:
    for i, item in enumerate(given.questions):
        labels = [o.label for o in item.options]
        if len(set(labels)) != len(labels):
            raise ValidationFailed(
                "option labels must be unique within a question",
                {"path": f"$.questions[{i}].options"},
            )
        if not labels and not item.custom:
            raise ValidationFailed(
                "a question needs at least one option, or custom: true",
                {"path": f"$.questions[{i}].options"},
            )


def check_answers(question: Question, answers: list[list[str]]) -> None:
    """One inner array per question; labels from the options unless ``custom``; one label
    unless ``multiple``. Anything else is refused with the index to fix."""
    if len(answers) != len(question.questions):
        raise InvalidInput(
            f"expected {len(question.questions)} answer arrays (one per question), "
            f"got {len(answers)}",
            {"path": "$.answers"},
            code="INVALID_ANSWER",
        )
    for i, (item, chosen) in enumerate(zip(question.questions, answers, strict=True)):
        path = f"$.answers[{i}]"
        if not chosen:
            raise InvalidInput("pick at least one answer", {"path": path}, code="INVALID_ANSWER")
        if len(chosen) > 1 and not item.multiple:
            raise InvalidInput(
                "this question takes a single answer", {"path": path}, code="INVALID_ANSWER"
            )
        if len(set(chosen)) != len(chosen):
            raise InvalidInput("answers repeat a label", {"path": path}, code="INVALID_ANSWER")
        labels = {o.label for o in item.options}
        unknown = [c for c in chosen if c not in labels]
        if unknown and not item.custom:
            raise InvalidInput(
                f"{unknown[0]!r} is not one of the options {sorted(labels)}",
                {"path": path, "options": sorted(labels)},
                code="INVALID_ANSWER",
            )
        if any(not c or len(c) > 4096 for c in chosen):
            raise InvalidInput(
                "answers are 1 to 4096 characters", {"path": path}, code="INVALID_ANSWER"
            )


async def raise_question(
    orch: Orchestrator, workspace_id: str, given: QuestionInput, idem: Idempotency | None
) -> Question:
    check_question(given)
    earlier = await orch.eventlog.recall(workspace_id, idem)
    if earlier is not None:  # a retry gets its first answer, whatever the bound says now
        return msgspec.json.decode(earlier.result, type=Question)
    limit = orch.settings.max_questions_per_session
    if await orch.models.pending_questions_of(workspace_id, given.sessionID) >= limit:
        raise TooMany(
            f"session {given.sessionID} already has {limit} pending questions; "
            "wait for answers before asking more",
            {"sessionID": given.sessionID, "limit": limit},
            code="TOO_MANY_QUESTIONS",
        )
    question = Question(
        id=mint("que"),
        sessionID=given.sessionID,
        questions=given.questions,
        tool=given.tool,
        expires_at=None if given.expires_in_ms is None else now_ms() + given.expires_in_ms,
    )

    def decide(plan: Plan) -> Decision:
        return Decision(
            [question, *_entry_follows(plan, question.sessionID, now_ms(), True)], question
        )

    result = await orch.command(workspace_id, decide, idem)
    return msgspec.json.decode(result, type=Question)


def _entry_follows(plan: Plan, session_id: str, now: int, waiting: bool) -> list[Any]:
    """An entry whose worker asks a question awaits input; an answer (or rejection, or
    expiry) puts it back in progress."""
    lease = plan.lease_of(session_id)
    entry = plan.entries.get(lease.entryID) if lease else None
    if entry is None:
        return []
    if waiting and entry.status == "in_progress":
        return move(plan, entry, "awaiting_input", now, "question asked")[1]
    if not waiting and entry.status == "awaiting_input":
        return move(plan, entry, "in_progress", now, "question settled")[1]
    return []


async def _settle(
    orch: Orchestrator,
    workspace_id: str,
    question: Question,
    version: int,
    event: Any,
    idem: Idempotency | None,
) -> int:
    """Append the event that settles a question, with its entry's return to work."""
    plan = await orch.models.plan(workspace_id)
    follows = _entry_follows(plan, question.sessionID, now_ms(), False)
    appended = await orch.eventlog.append(
        workspace_id,
        [new_event(event, question.id), *(new_event(e, "plan") for e in follows)],
        expect={question.id: version, "plan": plan.version},
        idempotency=idem,
    )
    return appended.last_seq


def _live(question: Question) -> bool:
    return question.expires_at is None or question.expires_at > now_ms()


async def _pending(orch: Orchestrator, workspace_id: str, question_id: str) -> tuple[Question, int]:
    found = await orch.models.pending_question(workspace_id, question_id)
    if found is None or not _live(found[0]):
        raise NotFound(
            f"question {question_id} is not pending (never asked, or already answered, "
            "rejected or expired)",
            {"questionID": question_id},
            code="QUESTION_NOT_FOUND",
        )
    return found


async def answer_question(
    orch: Orchestrator,
    workspace_id: str,
    question_id: str,
    answers: list[list[str]],
    idem: Idempotency | None,
) -> None:
    if await orch.eventlog.recall(workspace_id, idem):
        return

    async def attempt() -> None:
        question, version = await _pending(orch, workspace_id, question_id)
        check_answers(question, answers)
        event = QuestionAnswered(id=question.id, sessionID=question.sessionID, answers=answers)
        last = await _settle(orch, workspace_id, question, version, event, idem)
        await orch.models.wait_for(workspace_id, last)

    await orch.decide(workspace_id, question_id, attempt)


async def reject_question(
    orch: Orchestrator,
    workspace_id: str,
    question_id: str,
    reason: str | None,
    idem: Idempotency | None,
) -> None:
    if await orch.eventlog.recall(workspace_id, idem):
        return

    async def attempt() -> None:
        question, version = await _pending(orch, workspace_id, question_id)
        event = QuestionRejected(id=question.id, sessionID=question.sessionID, reason=reason)
        last = await _settle(orch, workspace_id, question, version, event, idem)
        await orch.models.wait_for(workspace_id, last)

    await orch.decide(workspace_id, question_id, attempt)


async def expire_due(orch: Orchestrator, workspace_id: str) -> int:
    """Emit ``question.expired`` for every question past its expiry; returns how many.

    Replicas may race to expire the same question: the version check lets one win.
    """
    expired = 0
    for question_id in await orch.models.questions_due(workspace_id):
        found = await orch.models.pending_question(workspace_id, question_id)
        if found is None or found[0].expires_at is None:
            continue
        question, version = found
        event = QuestionExpired(question.id, question.sessionID, found[0].expires_at)
        try:
            await _settle(orch, workspace_id, question, version, event, None)
        except VersionConflict:
            continue
        expired += 1
    return expired
