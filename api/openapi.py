"""The OpenAPI 3.1 document, generated from the operation table and the msgspec types that
decode requests and encode responses (``python -m api.openapi`` prints it)."""

import re
import sys
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from api.contract import OPERATIONS, PREFIX, Operation
from api.responses import raw_json
from orchestrator import __doc__ as summary
from orchestrator import jsonschema
from orchestrator.events import PAYLOAD_TYPES
from orchestrator.results import ErrorBody, EventFrame

VERSION = "1.0.0"
REF = "#/components/schemas/{name}"
COMMON_ERRORS = (400, 401, 403, 429, 503)
BODY_ERRORS = (413, 422)
WRITES = ("POST", "PATCH", "PUT", "DELETE")  # each takes an Idempotency-Key
DESCRIPTIONS = {
    400: "bad input: invalid JSON, id, parameter or header",
    401: "no valid bearer token (when tokens are enforced)",
    403: "the token does not reach this workspace",
    404: "not found",
    409: "conflict: illegal transition, stale version, or state that forbids it",
    413: "body, batch or bounded collection too large",
    422: "the body does not validate (the message names the JSON path), or the "
    "Idempotency-Key was used with another request (IDEMPOTENCY_KEY_REUSED)",
    429: "a per-client bound is reached; retry later",
    503: "Redis unavailable; retry (with the same Idempotency-Key)",
}
PATH_IDS = {
    "workspaceID": r"^[A-Za-z0-9_-]{1,64}$",
    "entryID": r"^[A-Za-z0-9_-]{1,64}$",
    "questionID": r"^[A-Za-z0-9_-]{1,64}$",
    "phaseID": r"^[A-Za-z0-9_-]{1,64}$",
    "leaseID": r"^[A-Za-z0-9_-]{1,64}$",
    "snapshotID": r"^[A-Za-z0-9_-]{1,64}$",
    "jobID": r"^[A-Za-z0-9_-]{1,64}$",
    "sessionID": r"^[A-Za-z0-9_.:-]{1,128}$",
}


def _types() -> list[Any]:
    found: list[Any] = [ErrorBody, EventFrame, *PAYLOAD_TYPES.values()]
    for op in OPERATIONS:
        found += [t for t in (*_alternatives(op.body), op.response) if t is not None]
    return found


def _alternatives(body: Any) -> tuple[Any, ...]:
    return body if isinstance(body, tuple) else (body,)


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _parameters(op: Operation, full_path: str) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": PATH_IDS[name]},
        }
        for name in re.findall(r"{(\w+)}", full_path)
    ]
    params += [
        {
            "name": p.name,
            "in": "query",
            "required": False,
            "description": p.description,
            "schema": p.schema,
        }
        for p in op.query
    ]
    if op.stream:
        params.append(
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "description": "resume after this seq (wins over since_seq)",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        )
    if op.method in WRITES:
        params.append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "a retry with this key returns the first result; appends nothing",
                "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
            }
        )
    return params


def _operation(op: Operation, schemas: dict[Any, dict[str, Any]], full_path: str) -> Any:
    responses: dict[str, Any] = {}
    if op.stream:
        responses["200"] = {
            "description": "Server-Sent Events: `id: <seq>`, `event: <type>`, `data:` JSON "
            "(an EventFrame on /events, the ToolCall on /log/stream); `reset` and "
            "`reconnect` control frames; `: keep-alive` heartbeats",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    elif op.media != "application/json":
        responses[str(op.status)] = {
            "description": op.summary,
            "content": {op.media: {"schema": {"type": "string"}}},
        }
    else:
        responses[str(op.status)] = {
            "description": op.summary,
            "content": _json(schemas[op.response])
            | {media: {"schema": {"type": "string"}} for media in op.also_media},
        }
    for status in op.also:
        responses[str(status)] = {"description": op.summary, "content": _json(schemas[op.response])}
    if op.may_be_empty:
        responses["204"] = {"description": "nothing to return"}
    errors = {*COMMON_ERRORS, *op.errors, *(BODY_ERRORS if op.body is not None else ())}
    if op.method in WRITES:
        errors.add(422)  # a reused Idempotency-Key, with or without a body
    if not op.scoped:
        errors = set(op.errors)
    for status in sorted(errors):
        responses[str(status)] = {
            "description": DESCRIPTIONS[status],
            "content": _json(schemas[ErrorBody]),
        }
    spec: dict[str, Any] = {
        "operationId": op.id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": _parameters(op, full_path),
        "responses": responses,
    }
    if op.body is not None:
        choices = [schemas[t] for t in _alternatives(op.body)]
        schema = choices[0] if len(choices) == 1 else {"oneOf": choices}
        spec["requestBody"] = {"required": True, "content": _json(schema)}
    if not op.scoped:
        spec["security"] = []
    return spec


def document() -> dict[str, Any]:
    types = _types()
    refs, components = jsonschema.schema_components(types, ref_template=REF)
    schemas = dict(zip(types, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        full = PREFIX + op.path if op.scoped else op.path
        paths.setdefault(full, {})[op.method.lower()] = _operation(op, schemas, full)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "orchestrator",
            "version": VERSION,
            "description": (summary or "").strip(),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
        "x-event-types": sorted(PAYLOAD_TYPES),
    }


def encoded() -> bytes:
    """The document as served and checked in: sorted keys, indented, one trailing newline."""
    return msgspec.json.format(msgspec.json.encode(document(), order="sorted"), indent=2) + b"\n"


_SERVED: list[bytes] = []


async def openapi_json(request: Request) -> Response:
    """``GET /openapi.json``: generated once per process."""
    if not _SERVED:
        _SERVED.append(encoded())
    return raw_json(_SERVED[0])


if __name__ == "__main__":
    sys.stdout.buffer.write(encoded())
