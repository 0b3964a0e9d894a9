"""Import jobs: start one, and see how it goes."""

from starlette.requests import Request
from starlette.responses import Response

from api import decode
from api.responses import JSON, raw_json
from api.state import services
from orchestrator import imports
from orchestrator.clock import now_ms
from orchestrator.errors import NotFound
from orchestrator.importer import Importer
from projections.imports import read_job


def importer(request: Request) -> Importer:
    value: Importer = request.state.importer
    return value


async def start_import(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    raw = await decode.body(request)
    given = decode.decode(raw, imports.ImportInput)
    idem = decode.idempotency(request, "import", raw)
    return raw_json(await importer(request).begin(ws, given, idem), 202)


async def get_import(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    job_id = decode.path_id(request, "jobID")
    s = services(request)
    await s.views.current(ws)
    job = await read_job(s.redis, ws, job_id)
    if job is None:
        raise NotFound(
            f"import job {job_id} not found", {"importJobID": job_id}, code="IMPORT_NOT_FOUND"
        )
    return JSON(imports.as_seen(job, now_ms(), s.settings.import_timeout_s))
