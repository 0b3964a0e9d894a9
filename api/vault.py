"""The vault: the TODO exported as a portable document, its JSON Schema, and snapshots."""

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from api import decode
from api.responses import JSON, markdown, raw_json
from api.state import services
from orchestrator import documents, vault
from orchestrator.clock import now_ms
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.markdown import render
from orchestrator.model import Plan
from projections.export import read_document

_SCHEMA: list[bytes] = []


def store(request: Request) -> vault.SnapshotStore:
    value: vault.SnapshotStore = request.state.vault
    return value


def _format(request: Request) -> str:
    decode.only_params(request, {"format"})
    chosen = request.query_params.get("format", "json")
    if chosen not in ("json", "markdown"):
        raise InvalidInput("format must be json or markdown", {"parameter": "format"})
    return chosen


async def _current(request: Request) -> tuple[documents.PlanDocument, Plan]:
    ws = decode.path_id(request, "workspaceID")
    s = services(request)
    await s.views.current(ws)
    return await read_document(s.redis, ws)


def _answer(document: documents.PlanDocument, chosen: str) -> Response:
    if chosen == "markdown":
        return markdown(render(document))
    return raw_json(documents.pretty(document))


async def export(request: Request) -> Response:
    chosen = _format(request)
    document, _ = await _current(request)
    return _answer(document, chosen)


async def schema(request: Request) -> Response:
    """The JSON Schema of the document, generated once per process."""
    if not _SCHEMA:
        _SCHEMA.append(documents.schema_json())
    return raw_json(_SCHEMA[0])


async def sync(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    idem = decode.idempotency(request, "vault-sync", b"")
    document, plan = await _current(request)
    meta = (plan.todo.id if plan.todo else None, plan.version)
    s = services(request)
    result = await vault.sync(s.eventlog, store(request), ws, document, meta, idem, now_ms())
    created = msgspec.json.decode(result, type=dict[str, object]).get("created") is True
    return raw_json(result, 201 if created else 200)


async def list_snapshots(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    decode.only_params(request, set())
    return JSON({"snapshots": await store(request).snapshots(ws)})


async def get_snapshot(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    snapshot_id = decode.path_id(request, "snapshotID")
    chosen = _format(request)
    found = await store(request).get(ws, snapshot_id)
    if found is None:
        raise NotFound(
            f"snapshot {snapshot_id} is not in the vault",
            {"snapshotID": snapshot_id},
            code="SNAPSHOT_NOT_FOUND",
        )
    snapshot, stored = found
    if chosen == "markdown":
        return _answer(msgspec.json.decode(stored, type=documents.PlanDocument), chosen)
    return raw_json(
        b'{"snapshot":' + msgspec.json.encode(snapshot) + b',"document":' + stored + b"}"
    )
