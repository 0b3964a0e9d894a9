"""The OpenAPI document: generated from the operation table and its msgspec types, checked in,
served, and covering every route the app serves."""

import json
from pathlib import Path

import httpx
from starlette.routing import Mount, Route

from api.app import ROUTES
from api.contract import OPERATIONS, PREFIX
from api.openapi import encoded
from orchestrator.events import PAYLOAD_TYPES
from tests.servers import ROOT, ServerProcess

CHECKED_IN = ROOT / "openapi.json"


def served_routes() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for route in ROUTES:
        children = route.routes if isinstance(route, Mount) else [route]
        prefix = route.path if isinstance(route, Mount) else ""
        for child in children:
            assert isinstance(child, Route)
            for method in child.methods or ():
                if method != "HEAD":
                    found.add((method, prefix + child.path))
    return found


def test_the_checked_in_document_is_the_generated_one() -> None:
    assert CHECKED_IN.read_bytes() == encoded(), (
        "openapi.json is stale: run `make openapi` and commit it"
    )


def test_every_served_route_is_documented_and_nothing_else() -> None:
    doc = json.loads(encoded())
    documented = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    assert documented | {("GET", "/openapi.json")} == served_routes()
    ids = [op.id for op in OPERATIONS]
    assert len(ids) == len(set(ids))


def test_the_document_is_openapi_3_1_with_every_shape() -> None:
    doc = json.loads(encoded())
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]
    assert set(doc["x-event-types"]) == set(PAYLOAD_TYPES)
    assert {"ErrorBody", "ToolCall", "Question", "Entry", "Phase", "Lease"} <= set(schemas)
    log = doc["paths"][PREFIX + "/log"]
    assert log["get"]["operationId"] == "get_log"
    assert log["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/LogPage"
    }
    assert {p["name"] for p in log["get"]["parameters"]} >= {"page", "limit", "tool", "from"}
    assert len(log["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]) == 2
    events = doc["paths"][PREFIX + "/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
    assert {p["name"] for p in events["parameters"]} == {
        "workspaceID",
        "since_seq",
        "Last-Event-ID",
    }
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")) and path != "/readyz":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)


def test_the_server_serves_it(server: ServerProcess) -> None:
    response = httpx.get(server.base_url + "/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == Path(CHECKED_IN).read_bytes()
