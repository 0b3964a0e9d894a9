from typing import Any

import httpx
import pytest

TOOL_CALL_FIELDS = [
    "tool", "sessionID", "callID", "entryID", "title", "timestamp", "duration", "status",
    "corrections", "target", "agentName", "container_id", "workspaceID",
]  # fmt: skip


def call(**fields: Any) -> dict[str, Any]:
    base = {"tool": "fs.read", "sessionID": "s1", "agentName": "build-agent", "status": "ok"}
    return {**base, **fields}


def test_the_published_example_round_trips(api: httpx.Client, workspace: str) -> None:
    full = call(
        callID="call_01HXYZBROWSEFILE",
        entryID="entry_01HXYZREADFILE",
        title="Read package.json",
        timestamp=1717691432000,
        duration=142,
        corrections=[],
        target="/workspace/repo/package.json",
        container_id="ctr_01HXYZ",
        sessionID="01HXYZABCDEFGHJKMNPQRSTVW",
    )
    sparse = call(
        tool="net.fetch",
        callID="call_01HXYZFETCHURL",
        timestamp=1717691438000,
        duration=412,
        status="intercepted",
        agentName="research-agent",
        sessionID="01HXYZABCDEFGHJKMNPQRSTVW",
    )
    created = api.post("/log", json={"items": [full, sparse]})
    assert created.status_code == 201
    assert created.json() == {
        "items": [
            {"seq": 1, "callID": "call_01HXYZBROWSEFILE"},
            {"seq": 2, "callID": "call_01HXYZFETCHURL"},
        ]
    }

    body = api.get("/log").json()
    assert list(body) == ["items", "meta"]
    assert body["meta"] == {"page": 1, "limit": 50, "total": 2, "pages": 1}
    first, second = body["items"]
    assert first == {**full, "workspaceID": workspace}
    assert list(first) == TOOL_CALL_FIELDS  # the published field order
    assert second == {**sparse, "corrections": [], "workspaceID": workspace}
    assert not {"entryID", "title", "target", "container_id"} & set(second)


def test_the_service_fills_in_call_id_timestamp_and_duration(api: httpx.Client) -> None:
    created = api.post("/log", json=call())
    assert created.status_code == 201
    (recorded,) = created.json()["items"]
    assert recorded["callID"].startswith("call_")
    (item,) = api.get("/log").json()["items"]
    assert item["callID"] == recorded["callID"]
    assert item["timestamp"] > 1_700_000_000_000
    assert item["duration"] == 0


@pytest.fixture
def recorded(api: httpx.Client) -> list[dict[str, Any]]:
    calls = [
        call(
            tool=["fs.read", "fs.write", "net.fetch"][n % 3],
            status="error" if n % 5 == 0 else "ok",
            sessionID=f"s{n % 2}",
            agentName=f"agent-{n % 4}",
            entryID=f"entry_{n % 3}",
            container_id="ctr_1" if n < 10 else None,
            callID=f"call_{n:03d}",
            timestamp=1_000 + n,
        )
        for n in range(30)
    ]
    assert api.post("/log", json={"items": calls}).status_code == 201
    return calls


FILTER_CASES: list[dict[str, str]] = [
    {"tool": "fs.read"},
    {"status": "error"},
    {"sessionID": "s1"},
    {"agentName": "agent-2"},
    {"entryID": "entry_1"},
    {"callID": "call_007"},
    {"container_id": "ctr_1"},
    {"tool": "fs.write", "sessionID": "s1"},
    {"tool": "net.fetch", "status": "ok", "agentName": "agent-1"},
    {"tool": "nothing"},
]


@pytest.mark.parametrize("filters", FILTER_CASES)
def test_every_filter_and_combination(
    api: httpx.Client, recorded: list[dict[str, Any]], filters: dict[str, str]
) -> None:
    expected = [c["callID"] for c in recorded if all(c.get(k) == v for k, v in filters.items())]
    body = api.get("/log", params=filters).json()
    assert [i["callID"] for i in body["items"]] == expected
    assert body["meta"]["total"] == len(expected)


def test_time_range_is_inclusive(api: httpx.Client, recorded: list[dict[str, Any]]) -> None:
    body = api.get("/log", params={"from": 1_005, "to": 1_009}).json()
    assert [i["timestamp"] for i in body["items"]] == [1005, 1006, 1007, 1008, 1009]
    both = api.get("/log", params={"from": 1_005, "to": 1_020, "tool": "fs.read"}).json()
    assert [i["timestamp"] for i in both["items"]] == [1006, 1009, 1012, 1015, 1018]


def test_pages_cover_every_item_once(api: httpx.Client, recorded: list[dict[str, Any]]) -> None:
    seen: list[str] = []
    for page in range(1, 5):
        body = api.get("/log", params={"page": page, "limit": 7}).json()
        assert body["meta"] == {"page": page, "limit": 7, "total": 30, "pages": 5}
        seen += [i["callID"] for i in body["items"]]
    assert seen == [c["callID"] for c in recorded][:28]
    last = api.get("/log", params={"page": 5, "limit": 7}).json()
    assert [i["callID"] for i in last["items"]] == ["call_028", "call_029"]
    beyond = api.get("/log", params={"page": 9, "limit": 7}).json()
    assert beyond["items"] == []
    assert beyond["meta"]["total"] == 30


def test_newest_first_on_request(api: httpx.Client, recorded: list[dict[str, Any]]) -> None:
    body = api.get("/log", params={"order": "desc", "limit": 3, "tool": "fs.read"}).json()
    assert [i["callID"] for i in body["items"]] == ["call_027", "call_024", "call_021"]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"page": "0"}, "page"),
        ({"page": "x"}, "page"),
        ({"limit": "501"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"from": "yesterday"}, "from"),
        ({"order": "sideways"}, "order"),
        ({"session_id": "s1"}, "session_id"),
        ({"tool": "x" * 257}, "tool"),
    ],
)
def test_bad_queries_name_the_parameter(
    api: httpx.Client, params: dict[str, str], parameter: str
) -> None:
    response = api.get("/log", params=params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_INPUT"
    assert error["details"]["parameter"] == parameter
    assert parameter in error["message"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"tool": "x"}, "missing required field `sessionID`"),
        (call(tool=1), "$.tool"),
        (call(duration=-1), "$.duration"),
        (call(sessionId="typo"), "sessionId"),
        (call(status="Not A Status"), "$.status"),
        ({"items": [call(), call(timestamp="now")]}, "$.items[1].timestamp"),
    ],
)
def test_invalid_calls_are_refused_whole(api: httpx.Client, body: Any, path: str) -> None:
    response = api.post("/log", json=body)
    assert response.status_code == 422
    assert path in response.json()["error"]["message"]
    assert api.get("/log").json()["meta"]["total"] == 0
    assert api.get("/debug-dump").json()["events"] == []


def test_workspace_id_in_the_body_must_match(api: httpx.Client) -> None:
    response = api.post("/log", json={"items": [call(), call(workspaceID="ws_other")]})
    assert response.status_code == 422
    assert response.json()["error"]["details"] == {"path": "$[1].workspaceID"}
    assert api.get("/log").json()["meta"]["total"] == 0


def test_batches_are_bounded(api: httpx.Client) -> None:
    response = api.post("/log", json={"items": [call()] * 1001})
    assert response.status_code == 413
    assert response.json()["error"]["details"] == {"limit": 1000}
    empty = api.post("/log", json={"items": []})
    assert empty.status_code == 422


def test_idempotent_retry_appends_nothing(api: httpx.Client) -> None:
    headers = {"Idempotency-Key": "batch-7"}
    body = {"items": [call(), call(tool="fs.write")]}
    first = api.post("/log", json=body, headers=headers)
    again = api.post("/log", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert api.get("/log").json()["meta"]["total"] == 2
