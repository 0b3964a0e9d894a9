import time
from typing import Any

import httpx
import pytest

DEPLOY = {
    "question": "Which deployment target should I use for the new service?",
    "header": "Deploy target",
    "options": [
        {
            "label": "AWS us-east-1",
            "description": "Production-grade region with full feature parity.",
        },
        {
            "label": "GCP europe-west1",
            "description": "Lower latency for EU users; some services are stubs.",
        },
    ],
    "multiple": False,
    "custom": True,
}
OPTIONS: list[dict[str, str]] = DEPLOY["options"]  # type: ignore[assignment]
TOOL = {"messageID": "msg_01HXYZMESSAGEID", "callID": "call_01HXYZCALLID"}


def ask(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"sessionID": "01HXYZABCDEFGHJKMNPQRSTVW", "questions": [DEPLOY], "tool": TOOL}
    response = api.post("/questions", json={**body, **fields})
    assert response.status_code == 201, response.text
    question: dict[str, Any] = response.json()["question"]
    return question


def test_a_raised_question_has_the_published_shape(api: httpx.Client) -> None:
    question = ask(api)
    assert list(question) == ["id", "sessionID", "questions", "tool"]
    assert question["id"].startswith("que_")
    assert question["sessionID"] == "01HXYZABCDEFGHJKMNPQRSTVW"
    assert question["questions"] == [DEPLOY]
    assert question["tool"] == TOOL

    assert api.get("/questions").json() == {"questions": [question]}
    assert api.get(f"/questions/{question['id']}").json() == {"question": question}
    (event,) = api.get("/debug-dump").json()["events"]
    assert event == {"seq": 1, "type": "question.asked", "payload": question}


def test_questions_are_listed_oldest_first_until_answered(api: httpx.Client) -> None:
    ids = [ask(api)["id"] for _ in range(3)]
    assert [q["id"] for q in api.get("/questions").json()["questions"]] == ids

    answered = api.post(f"/questions/{ids[1]}/answer", json={"answers": [["AWS us-east-1"]]})
    assert answered.status_code == 200
    assert answered.json() == {"answered": True}
    assert [q["id"] for q in api.get("/questions").json()["questions"]] == [ids[0], ids[2]]
    gone = api.get(f"/questions/{ids[1]}")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "QUESTION_NOT_FOUND"

    rejected = api.post(f"/questions/{ids[0]}/reject", json={"reason": "not now"})
    assert rejected.status_code == 200
    assert rejected.json() == {"rejected": True}
    assert [q["id"] for q in api.get("/questions").json()["questions"]] == [ids[2]]

    types = [e["type"] for e in api.get("/debug-dump").json()["events"]]
    assert types == ["question.asked"] * 3 + ["question.answered", "question.rejected"]


def test_the_answer_event_carries_the_answers(api: httpx.Client) -> None:
    question = ask(api)
    api.post(f"/questions/{question['id']}/answer", json={"answers": [["somewhere custom"]]})
    event = api.get("/debug-dump").json()["events"][-1]
    assert event["payload"] == {
        "id": question["id"],
        "sessionID": question["sessionID"],
        "answers": [["somewhere custom"]],
    }


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ([["AWS us-east-1", "GCP europe-west1"]], "single answer"),
        ([], "expected 1 answer arrays"),
        ([["AWS us-east-1"], ["extra"]], "expected 1 answer arrays"),
        ([[]], "at least one"),
    ],
)
def test_bad_answers_are_400_and_change_nothing(
    api: httpx.Client, answers: list[list[str]], message: str
) -> None:
    question = ask(api)
    response = api.post(f"/questions/{question['id']}/answer", json={"answers": answers})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_ANSWER"
    assert message in response.json()["error"]["message"]
    assert api.get(f"/questions/{question['id']}").status_code == 200


def test_labels_outside_the_options_need_custom(api: httpx.Client) -> None:
    strict = {**DEPLOY, "custom": False}
    question = ask(api, questions=[strict])
    response = api.post(f"/questions/{question['id']}/answer", json={"answers": [["Azure"]]})
    assert response.status_code == 400
    assert response.json()["error"]["details"]["options"] == ["AWS us-east-1", "GCP europe-west1"]


def test_answering_twice_is_404_but_an_idempotent_retry_is_not(api: httpx.Client) -> None:
    question = ask(api)
    url = f"/questions/{question['id']}/answer"
    body = {"answers": [["AWS us-east-1"]]}
    assert api.post(url, json=body, headers={"Idempotency-Key": "a1"}).status_code == 200
    assert api.post(url, json=body, headers={"Idempotency-Key": "a1"}).json() == {"answered": True}
    assert api.post(url, json=body).status_code == 404
    types = [e["type"] for e in api.get("/debug-dump").json()["events"]]
    assert types == ["question.asked", "question.answered"]


def test_unknown_questions_are_404(api: httpx.Client) -> None:
    for response in (
        api.get("/questions/que_missing"),
        api.post("/questions/que_missing/answer", json={"answers": [["x"]]}),
        api.post("/questions/que_missing/reject"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["details"] == {"questionID": "que_missing"}


def test_questions_expire(api: httpx.Client) -> None:
    question = ask(api, expires_in_ms=300)
    assert question["expires_at"] > 0
    deadline = time.monotonic() + 5
    while api.get("/questions").json()["questions"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert api.get("/questions").json() == {"questions": []}
    assert api.get(f"/questions/{question['id']}").status_code == 404
    answer = api.post(f"/questions/{question['id']}/answer", json={"answers": [["AWS us-east-1"]]})
    assert answer.status_code == 404
    while time.monotonic() < deadline:
        events = api.get("/debug-dump").json()["events"]
        if events[-1]["type"] == "question.expired":
            break
        time.sleep(0.1)
    assert [e["type"] for e in events] == ["question.asked", "question.expired"]


def raised(**fields: Any) -> dict[str, Any]:
    return {"sessionID": "s", "questions": [DEPLOY], "tool": TOOL, **fields}


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"questions": [DEPLOY], "tool": TOOL}, 422, "sessionID"),
        (raised(questions=[]), 422, "$.questions"),
        ({"sessionID": "s", "questions": [DEPLOY]}, 422, "tool"),
        (raised(questions=[{**DEPLOY, "options": []}]), 200, ""),
        (
            raised(questions=[{**DEPLOY, "options": [], "custom": False}]),
            422,
            "at least one option",
        ),
        (raised(questions=[{**DEPLOY, "options": OPTIONS * 2}]), 422, "unique"),
        (raised(expires_in_ms=0), 422, "expires_in_ms"),
    ],
)
def test_raising_validates_the_question(
    api: httpx.Client, body: dict[str, Any], status: int, fragment: str
) -> None:
    response = api.post("/questions", json=body)
    if status == 200:
        assert response.status_code == 201
        return
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]
    assert api.get("/questions").json() == {"questions": []}
