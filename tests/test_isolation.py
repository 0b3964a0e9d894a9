"""Workspace isolation: a token of workspace A reaches nothing of workspace B.

Every operation of the served OpenAPI document (SSE streams included) is called with A's
token on B's workspace path and B's real ids: each answers 403 or 404, shows none of B's
data, and changes nothing of B (B's debug dump and B's Redis keys are the same before and
after). Without a token each answers 401. B's ids used under A's own workspace path are
unknown there (404): ids are never trusted as secrets.

Tokens are global keys, and a server enforces them once one exists, so this module runs on
a Redis of its own.
"""

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from orchestrator.redis_server import RedisServer
from orchestrator.tokens import TokenStore
from tests.seeding import Seeded, seed
from tests.servers import ServerProcess

A, B = "ws_iso_a", "ws_iso_b"
WRITES = ("post", "put", "patch", "delete")
# The most revealing and the most destructive values a query may carry.
QUERY = {"since_seq": "0", "force": "true"}
# Volatile parts of the debug dump: when it was made, and this replica's in-memory caches.
VOLATILE = ("generated_at", "caches")
Json = dict[str, Any]


@dataclass(frozen=True)
class Isolated:
    server: ServerProcess
    redis_url: str
    tokens: dict[str, str]  # "a", "b" -> secret
    b: Seeded
    document: Json


async def _create_tokens(redis_url: str) -> dict[str, str]:
    redis = Redis.from_url(redis_url)
    try:
        store = TokenStore(redis)
        return {name: (await store.create(name, ws))[1] for name, ws in (("a", A), ("b", B))}
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
def iso(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isolated]:
    redis = RedisServer(tmp_path_factory.mktemp("iso-redis"), appendonly=False)
    redis.start()
    tokens = asyncio.run(_create_tokens(redis.url))
    # Leases outlive the test, so that nothing of B moves by itself while it runs.
    server = ServerProcess(
        redis.url, tmp_path_factory.mktemp("iso") / "server.log", ORCH_WORKER_LEASE_MS="600000"
    )
    server.start()
    try:
        with httpx.Client(
            base_url=server.workspace_url(B), headers=bearer(tokens["b"]), timeout=10
        ) as b_api:
            b = seed(b_api, B, "bsecret")
            # The started executor gets its dispatcher within a tick; from then on, nothing
            # of B changes by itself while the test runs.
            deadline = time.monotonic() + 10
            while b_api.get("/debug-dump").json()["dispatcher"] is None:
                assert time.monotonic() < deadline, "no dispatcher took workspace B"
                time.sleep(0.05)
        document = httpx.get(server.base_url + "/openapi.json").json()
        yield Isolated(server, redis.url, tokens, b, document)
    finally:
        server.stop()
        redis.stop()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# Building a request for an operation from the document


@dataclass(frozen=True)
class Call:
    operation: str
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: Any
    stream: bool
    public: bool  # declares no security: a service-level probe
    ids: tuple[str, ...]  # the entity ids in its path, besides the workspace


def operations(document: Json) -> list[tuple[str, str, Json]]:
    return [
        (path, method, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]


def call_for(document: Json, path: str, method: str, op: Json, ids: dict[str, str]) -> Call:
    params = [p for p in op.get("parameters", []) if p["in"] == "path"]
    filled = path
    for p in params:
        filled = filled.replace("{" + p["name"] + "}", ids.get(p["name"], "x_absent"))
    query = {p["name"]: QUERY[p["name"]] for p in op.get("parameters", []) if p["name"] in QUERY}
    headers = {}
    names = {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}
    if "Last-Event-ID" in names:
        headers["Last-Event-ID"] = "0"
    if "Idempotency-Key" in names:
        headers["Idempotency-Key"] = "isolation-walk"
    body = None
    if "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        body = example(document, schema)
    responses = op["responses"].get("200", {}).get("content", {})
    return Call(
        operation=op["operationId"],
        method=method.upper(),
        path=filled,
        params=query,
        headers=headers,
        body=body,
        stream="text/event-stream" in responses,
        public=op.get("security") == [],
        ids=tuple(
            ids[p["name"]] for p in params if p["name"] != "workspaceID" and p["name"] in ids
        ),
    )


def example(document: Json, schema: Json) -> Any:
    """The smallest value the schema accepts (enough to pass decoding, were the gate not
    there): required properties only, minimum sizes, the first alternative."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return example(document, document["components"]["schemas"][name])
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return example(document, schema[key][0])
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: example(document, props.get(k, {})) for k in schema.get("required", [])}
    if kind == "array":
        return [
            example(document, schema.get("items", {})) for _ in range(schema.get("minItems", 0))
        ]
    if kind == "string":
        return "x" * max(1, schema.get("minLength", 1))
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return True
    return None


def send(client: httpx.Client, call: Call, base: str) -> tuple[int, str, httpx.Headers]:
    """Status, body text (for a stream: what arrived first) and headers."""
    request = client.build_request(
        call.method,
        base + call.path,
        params=call.params,
        headers=call.headers,
        content=None if call.body is None else json.dumps(call.body).encode(),
    )
    response = client.send(request, stream=True)
    try:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            text = next(response.iter_text(), "")  # a stream: its first chunk is enough
        else:
            text = response.read().decode()
    finally:
        response.close()
    return response.status_code, text, response.headers


def leaks(text: str, secrets: set[str]) -> set[str]:
    return {s for s in secrets if s in text}


def b_state(iso: Isolated) -> tuple[Json, list[str]]:
    """B's debug dump (less its volatile parts) and the names of B's Redis keys."""
    url = iso.server.workspace_url(B) + "/debug-dump"
    dump = httpx.get(url, headers=bearer(iso.tokens["b"]), timeout=10).json()
    for key in VOLATILE:
        dump.pop(key)

    async def names() -> list[str]:
        redis = Redis.from_url(iso.redis_url)
        try:
            found = [k.decode() async for k in redis.scan_iter(match=f"orch:{{{B}}}:*")]
            return sorted(found)
        finally:
            await redis.aclose()

    return dump, asyncio.run(names())


def b_ids(b: Seeded) -> dict[str, str]:
    return {
        "workspaceID": B,
        "entryID": b.entries[0],
        "questionID": b.question,
        "phaseID": b.phase,
        "leaseID": b.leases[0],
        "sessionID": b.sessions[0],
        "jobID": b.job,
        "snapshotID": b.snapshot,
    }


# The tests


def test_the_seeded_ids_are_real_for_b(iso: Isolated) -> None:
    """The control: B's own token reads B's data at the very paths the walks use."""
    checked = 0
    with httpx.Client(headers=bearer(iso.tokens["b"]), timeout=10) as client:
        for path, method, op in operations(iso.document):
            call = call_for(iso.document, path, method, op, b_ids(iso.b))
            absent = "x_absent" in call.path
            if method != "get" or call.stream or call.public or absent:
                continue
            status, text, _ = send(client, call, iso.server.base_url)
            assert status == 200, (call.operation, text)
            # What it reads of B shows: the ids it names, or the values written with them.
            assert all(i in text for i in call.ids) or iso.b.tag in text, call.operation
            checked += 1
    assert checked >= 20
    dump, _ = b_state(iso)
    assert iso.b.tag in json.dumps(dump)
    assert dump["leases"]
    assert dump["locks"]
    assert dump["executor"]["status"] == "running"


def test_a_token_reaches_nothing_of_b(iso: Isolated) -> None:
    before = b_state(iso)
    secrets = iso.b.values()
    walked: list[str] = []
    with httpx.Client(headers=bearer(iso.tokens["a"]), timeout=10) as client:
        for path, method, op in operations(iso.document):
            call = call_for(iso.document, path, method, op, b_ids(iso.b))
            status, text, _ = send(client, call, iso.server.base_url)
            walked.append(call.operation)
            assert not leaks(text, secrets), (call.operation, status, text[:500])
            if call.public:
                assert status in (200, 503), (call.operation, status)  # a probe: no workspace
                continue
            assert status in (403, 404), (call.operation, status, text[:500])
            assert set(json.loads(text)["error"]) == {"code", "message", "details"}
    assert sorted(walked) == sorted(op["operationId"] for *_, op in operations(iso.document))
    assert len(walked) == len(operations(iso.document))
    assert b_state(iso) == before, "an operation with A's token changed workspace B"


def test_without_a_token_every_operation_is_401(iso: Isolated) -> None:
    before = b_state(iso)
    walked = 0
    with httpx.Client(timeout=10) as client:
        for path, method, op in operations(iso.document):
            call = call_for(iso.document, path, method, op, b_ids(iso.b))
            status, text, headers = send(client, call, iso.server.base_url)
            walked += 1
            assert not leaks(text, iso.b.values()), (call.operation, text[:500])
            if call.public:
                assert status != 401, call.operation
                continue
            assert status == 401, (call.operation, status, text[:500])
            assert json.loads(text)["error"]["code"] == "UNAUTHENTICATED"
            assert headers["www-authenticate"].startswith("Bearer")
    assert walked == len(operations(iso.document))
    assert b_state(iso) == before


def test_b_ids_under_a_workspace_are_unknown(iso: Isolated) -> None:
    """A's token on A's own path with B's ids: each entity id is not found; reads of A show
    nothing of B."""
    before = b_state(iso)
    ids = {**b_ids(iso.b), "workspaceID": A}
    walked = 0
    with httpx.Client(headers=bearer(iso.tokens["a"]), timeout=10) as client:
        for path, method, op in operations(iso.document):
            call = call_for(iso.document, path, method, op, ids)
            if method in WRITES and not call.ids:
                continue  # a write of A's own that names nothing of B
            status, text, _ = send(client, call, iso.server.base_url)
            walked += 1
            sent = call.path + json.dumps(call.body)
            secrets = {s for s in iso.b.values() if s not in sent}  # an echo is no leak
            assert not leaks(text, secrets), (call.operation, status, text[:500])
            if set(call.ids) - set(iso.b.sessions):  # an entity id (a session is free-form)
                assert status == 404, (call.operation, status, text[:500])
    assert walked >= 40
    assert b_state(iso) == before


def test_an_idempotency_key_of_b_replays_nothing_for_a(iso: Isolated) -> None:
    """The same write with the same key in A is A's own: B's stored answer stays B's."""
    key, body = {"Idempotency-Key": "shared-key"}, {"note": "same body"}
    b_url, a_url = iso.server.workspace_url(B), iso.server.workspace_url(A)
    b_headers = bearer(iso.tokens["b"]) | key
    first = httpx.patch(b_url + "/config", json=body, headers=b_headers, timeout=10)
    assert iso.b.tag in first.text
    a_headers = bearer(iso.tokens["a"]) | key
    mine = httpx.patch(a_url + "/config", json=body, headers=a_headers, timeout=10)
    assert mine.status_code == 200
    assert not leaks(mine.text, iso.b.values())
