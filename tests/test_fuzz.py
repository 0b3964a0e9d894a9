"""Fuzzing the live API from its OpenAPI document.

- schemathesis generates cases for every operation of the document (valid and invalid by
  its schemas: the examples, coverage and fuzzing phases, ``CASES`` fuzzed cases per
  operation besides the coverage cases), half of them aimed at a workspace seeded with data of
  every kind and its real ids, and checks each answer: no server error, the status code,
  content type and body the document gives for it.
- The SSE streams, which never end, are left to a test of their own: any resume point
  that is not a seq is 400 with the error shape; any seq opens the stream.
- hypothesis posts junk to every write operation (bodies of the wrong types, huge
  numbers, odd unicode, deep nesting, invalid JSON; ids with illegal characters): never a
  5xx, and every 4xx has the error shape.

Cases run and 5xx seen are counted and reported at the end of the module. The runs are
derandomized, so the suite sees the same cases every time; ``ORCH_FUZZ_RANDOM=1`` explores
(with ``ORCH_FUZZ_CASES=200``, say).

The server runs on a Redis of its own, and may only clone repositories from local paths.
"""

import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from ulid import ULID

from orchestrator.redis_server import RedisServer
from tests.seeding import Seeded, seed
from tests.servers import ROOT, ServerProcess

# Fuzzed cases per operation, besides the coverage phase's (0 to 300 each), and junk
# requests per write; ORCH_FUZZ_CASES scales both (the suite's run keeps within ~90 s).
CASES = int(os.environ.get("ORCH_FUZZ_CASES", "20"))
JUNK = CASES * 5 // 4
STREAM_CASES = 40
# What the server serves (checked below): loaded at import, as schemathesis makes one test
# per operation when the module is collected.
DOCUMENT = json.loads((ROOT / "openapi.json").read_bytes())
WRITES = ("post", "put", "patch", "delete")
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]
FUZZ = settings(
    deadline=None,
    derandomize=not os.environ.get("ORCH_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=list(HealthCheck),
)
Json = dict[str, Any]


def _streams() -> list[str]:
    return [
        op["operationId"]
        for item in DOCUMENT["paths"].values()
        for op in item.values()
        if "text/event-stream" in op["responses"].get("200", {}).get("content", {})
    ]


STREAMS = _streams()
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(operation_id=STREAMS)


# The server, the seeded workspace, and the tally


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    redis = RedisServer(tmp_path_factory.mktemp("fuzz-redis"), appendonly=False)
    redis.start()
    server = ServerProcess(
        redis.url, tmp_path_factory.mktemp("fuzz") / "server.log", ORCH_IMPORT_PROTOCOLS="file"
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        redis.stop()


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest) -> Iterator[Counter[str]]:
    """What was run, reported when the module is done (past output capture)."""
    counts: Counter[str] = Counter()
    yield counts
    per_operation = [v for k, v in counts.items() if k.startswith("op:")] or [0]
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(
            f"\nfuzz: {counts['cases']} schemathesis cases over {counts['operations']} "
            f"operations ({min(per_operation)} to {max(per_operation)} each), "
            f"{counts['stream']} stream cases, {counts['junk']} junk requests over "
            f"{counts['writes']} writes; {counts['5xx']} answered 5xx"
        )


class Seeds:
    """Workspaces filled with data of every kind: one for each operation that may change
    it, one shared by the reads; each made when first needed."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.made: dict[str, Seeded] = {}

    def fresh(self) -> Seeded:
        workspace = f"ws_fuzz_{ULID()}"
        with httpx.Client(base_url=self.server.workspace_url(workspace), timeout=10) as api:
            return seed(api, workspace, "fuzzed")

    def of(self, operation: str, method: str) -> Seeded:
        key = "reads" if method.lower() == "get" else operation
        if key not in self.made:
            self.made[key] = self.fresh()
        return self.made[key]


@pytest.fixture(scope="module")
def seeds(live: ServerProcess) -> Seeds:
    return Seeds(live)


@pytest.fixture
def seeded(seeds: Seeds) -> Seeded:
    return seeds.of("reads", "get")


def real_ids(seeded: Seeded) -> dict[str, list[str]]:
    return {
        "workspaceID": [seeded.workspace],
        "entryID": seeded.entries,
        "questionID": [seeded.question],
        "phaseID": [seeded.phase],
        "leaseID": seeded.leases,
        "sessionID": seeded.sessions,
        "jobID": [seeded.job],
        "snapshotID": [seeded.snapshot],
    }


def defang(body: Any) -> Any:
    """Imports name a local path that does not exist, which the server refuses before git
    runs (it allows no local root): a fuzzer sends no traffic out."""
    if isinstance(body, dict) and isinstance(body.get("repoUrl"), str):
        return {**body, "repoUrl": "/nonexistent/fuzzed-repository"}
    return body


def count(tally: Counter[str], kind: str, status: int) -> None:
    tally[kind] += 1
    tally["5xx"] += status >= 500


# schemathesis: every operation, from the document


LOOKS_LIKE_AN_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def aim(case: schemathesis.Case[Any], pools: dict[str, list[str]]) -> None:
    """Point half the cases at the seeded workspace's real ids (chosen by a digest of the
    case, so a run is repeatable); a path parameter generated invalid stays invalid."""
    params = case.path_parameters or {}
    digest = zlib.crc32(json.dumps(params, sort_keys=True, default=str).encode())
    if digest % 2:
        return
    for i, name in enumerate(sorted(params)):
        value = params[name]
        if name in pools and isinstance(value, str) and LOOKS_LIKE_AN_ID.fullmatch(value):
            params[name] = pools[name][(digest >> (i + 1)) % len(pools[name])]


@schema.parametrize()
@settings(FUZZ, max_examples=CASES)
def test_every_operation_answers_as_documented(
    case: schemathesis.Case[Any], live: ServerProcess, seeds: Seeds, tally: Counter[str]
) -> None:
    label = case.operation.label
    if not tally[f"op:{label}"]:
        tally["operations"] += 1
    tally[f"op:{label}"] += 1
    aim(case, real_ids(seeds.of(label, case.method)))
    case.body = defang(case.body)
    response = case.call(base_url=live.base_url, timeout=15)
    count(tally, "cases", response.status_code)
    case.validate_response(response, checks=CHECKS)


def test_the_fuzzed_document_is_the_served_one(live: ServerProcess) -> None:
    assert httpx.get(live.base_url + "/openapi.json").json() == DOCUMENT


def test_every_non_stream_operation_was_fuzzed(tally: Counter[str]) -> None:
    if not tally["cases"]:
        pytest.skip("the schemathesis cases were not selected")
    operations = sum(len(item) for item in DOCUMENT["paths"].values()) - len(STREAMS)
    assert tally["operations"] == operations
    assert tally["5xx"] == 0


# The SSE streams


def stream_path(operation: str, workspace: str) -> str:
    [path] = [
        p
        for p, item in DOCUMENT["paths"].items()
        if item.get("get", {}).get("operationId") == operation
    ]
    return str(path).replace("{workspaceID}", workspace)


NOT_A_SEQ = st.one_of(
    st.integers(max_value=-1).map(str),
    st.integers(min_value=2**63).map(str),
    st.floats(allow_nan=True).map(repr),
    st.text(min_size=1),
    st.sampled_from(["", " ", "1e3", "0x10", "+1", "1_000", "²", "١٢", "1.0", "0 1", "%00"]),
).filter(lambda s: not (s.strip().isascii() and s.strip().isdigit() and int(s) < 2**63))


def header_value(text: str) -> bytes:
    """As a client can send it: no control characters, no space around (h11 refuses them)."""
    raw = text.encode("utf-8", "surrogatepass")
    return bytes(b for b in raw if b >= 0x20 and b != 0x7F).strip(b" ")


@pytest.mark.parametrize("operation", STREAMS)
@settings(FUZZ, max_examples=STREAM_CASES)
@given(in_header=st.booleans(), value=NOT_A_SEQ)
def test_a_stream_refuses_a_resume_point_that_is_not_a_seq(
    operation: str,
    in_header: bool,
    value: str,
    live: ServerProcess,
    seeded: Seeded,
    tally: Counter[str],
) -> None:
    url = live.base_url + stream_path(operation, seeded.workspace)
    if in_header:
        sent = header_value(value)
        if sent.strip().isdigit():
            return  # what is left once the header is cleaned is a seq after all
        response = httpx.get(url, headers={b"Last-Event-ID": sent}, timeout=10)
    else:
        response = httpx.get(url, params={"since_seq": value}, timeout=10)
    count(tally, "stream", response.status_code)
    assert response.status_code == 400, (value, response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["code"] == "INVALID_INPUT"
    assert error["details"]["parameter"] in ("since_seq", "Last-Event-ID")


@pytest.mark.parametrize("operation", STREAMS)
@settings(FUZZ, max_examples=STREAM_CASES // 4)
@given(in_header=st.booleans(), seq=st.integers(min_value=0, max_value=2**63 - 1))
def test_a_stream_opens_at_any_seq(
    operation: str,
    in_header: bool,
    seq: int,
    live: ServerProcess,
    seeded: Seeded,
    tally: Counter[str],
) -> None:
    url = live.base_url + stream_path(operation, seeded.workspace)
    where: Json = {"headers": {"Last-Event-ID": str(seq)}} if in_header else {}
    where |= {} if in_header else {"params": {"since_seq": str(seq)}}
    with httpx.stream("GET", url, timeout=10, **where) as response:
        count(tally, "stream", response.status_code)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert next(response.iter_bytes()).startswith(b"retry: ")


# Junk to every write operation


ILLEGAL_IDS = [
    "..",
    ".",
    "{",
    "}",
    "{ws}",
    "a b",
    "%00",
    "\x00",
    "a/b",
    "é",
    "a" * 65,
    "*",
    "?",
    "#",
    ":",
    "\n",
    "ws\u202e",
    "\ud800",
]
DEEP = b'{"a":' * 5000 + b"1" + b"}" * 5000
ODD_BODIES = [
    DEEP,
    b"[" * 5000 + b"]" * 5000,
    b'{"a":1e400}',
    b"NaN",
    b"{" + b'"k":1,' * 100_000 + b'"k":2}',
    b'{"a":' + b"9" * 5000 + b"}",
    b"\xff\xfe{}",
    b'{"\\ud800":"\\udfff"}',
    b"x" * (1024 * 1024 + 1),
    b"",
    b"null",
    b"{}",
    b"[]",
]


def write_operations() -> list[tuple[str, str, Json]]:
    return [
        (path, method, op)
        for path, item in DOCUMENT["paths"].items()
        for method, op in item.items()
        if method in WRITES
    ]


def property_names(op: Json) -> list[str]:
    """The names the operation's body schema knows (at any depth), so junk goes deep."""
    found: set[str] = set()

    def walk(node: Any, seen: frozenset[str]) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                name = node["$ref"].rsplit("/", 1)[-1]
                if name not in seen:
                    walk(DOCUMENT["components"]["schemas"][name], seen | {name})
                return
            found.update(node.get("properties", {}))
            for value in node.values():
                walk(value, seen)
        elif isinstance(node, list):
            for value in node:
                walk(value, seen)

    walk(op.get("requestBody", {}), frozenset())
    return sorted(found) or ["x"]


def text() -> st.SearchStrategy[str]:
    surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1)
    return st.one_of(st.text(), surrogates, st.sampled_from(ILLEGAL_IDS), st.just("x" * 70_000))


def json_values(keys: list[str]) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=2**53 - 2, max_value=2**53 + 2),
        st.integers(min_value=2**63, max_value=2**200),
        st.floats(),
        text(),
    )
    names = st.one_of(st.sampled_from(keys), st.text(max_size=8))
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
        max_leaves=12,
    )


def junk_bodies(keys: list[str]) -> st.SearchStrategy[bytes]:
    values = json_values(keys)
    near_valid = st.fixed_dictionaries({}, optional={k: values for k in keys})

    def encode(value: Any, ascii_only: bool) -> bytes:
        return json.dumps(defang(value), ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")

    encoded = st.builds(encode, st.one_of(near_valid, values), st.booleans())
    return st.one_of(encoded, encoded, st.binary(max_size=64), st.sampled_from(ODD_BODIES))


def path_with(path: str, draw: st.DataObject, pools: dict[str, list[str]]) -> str:
    for name in pools:
        if "{" + name + "}" in path:
            value = draw.draw(
                st.sampled_from(pools[name]) | st.sampled_from(ILLEGAL_IDS), label=name
            )
            encoded = quote(value.encode("utf-8", "surrogatepass"), safe="").replace(".", "%2E")
            path = path.replace("{" + name + "}", encoded)
    assert "{" not in path, f"no ids for {path}"
    return path


def assert_error_shape(response: httpx.Response) -> None:
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, body
    assert isinstance(error["code"], str), body
    assert error["code"].isupper(), body
    assert isinstance(error["message"], str), body
    assert error["message"], body
    assert isinstance(error["details"], dict), body


@pytest.mark.parametrize(
    ("path", "method", "op"),
    write_operations(),
    ids=[o["operationId"] for *_, o in write_operations()],
)
@settings(FUZZ, max_examples=JUNK)
@given(data=st.data())
def test_junk_never_breaks_a_write(
    path: str,
    method: str,
    op: Json,
    data: st.DataObject,
    live: ServerProcess,
    seeds: Seeds,
    tally: Counter[str],
) -> None:
    if not tally[f"write:{op['operationId']}"]:
        tally["writes"] += 1
    tally[f"write:{op['operationId']}"] += 1
    target = path_with(path, data, real_ids(seeds.of(f"junk:{op['operationId']}", method)))
    body = data.draw(junk_bodies(property_names(op)), label="body")
    headers = {b"Content-Type": b"application/json"}
    key = data.draw(st.none() | st.text(max_size=300), label="Idempotency-Key")
    if key is not None:
        headers[b"Idempotency-Key"] = header_value(key)
    response = httpx.request(
        method.upper(), live.base_url + target, content=body, headers=headers, timeout=15
    )
    count(tally, "junk", response.status_code)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_error_shape(response)
