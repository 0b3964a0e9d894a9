"""The questions agents ask humans: list, detail, raise, answer, reject."""

from starlette.requests import Request
from starlette.responses import Response

from api import decode
from api.responses import JSON, raw_json
from api.state import services
from orchestrator import questions
from orchestrator import results as r
from orchestrator.errors import NotFound


async def list_questions(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    pending = await services(request).views.questions(ws)
    return raw_json(b'{"questions":[' + b",".join(p.raw for p in pending) + b"]}")


async def get_question(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    question_id = decode.path_id(request, "questionID")
    found = await services(request).views.question(ws, question_id)
    if found is None:
        raise NotFound(
            f"question {question_id} is not pending",
            {"questionID": question_id},
            code="QUESTION_NOT_FOUND",
        )
    return raw_json(b'{"question":' + found.raw + b"}")


async def raise_question(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    raw = await decode.body(request)
    given = decode.decode(raw, questions.QuestionInput)
    idem = decode.idempotency(request, "question", raw)
    question = await questions.raise_question(services(request).orchestrator, ws, given, idem)
    return JSON(r.QuestionBody(question=question), 201)


async def answer_question(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    question_id = decode.path_id(request, "questionID")
    raw = await decode.body(request)
    given = decode.decode(raw, questions.AnswerInput)
    idem = decode.idempotency(request, f"answer:{question_id}", raw)
    orch = services(request).orchestrator
    await questions.answer_question(orch, ws, question_id, given.answers, idem)
    return JSON(r.Answered(answered=True))


async def reject_question(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    question_id = decode.path_id(request, "questionID")
    raw = await decode.body(request)
    given = decode.decode(raw, questions.RejectInput) if raw.strip() else questions.RejectInput()
    idem = decode.idempotency(request, f"reject:{question_id}", raw)
    orch = services(request).orchestrator
    await questions.reject_question(orch, ws, question_id, given.reason, idem)
    return JSON(r.Rejected(rejected=True))
