"""Baseline: the floor. A Starlette endpoint that reads the body and answers, nothing else."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def record(request: Request) -> Response:
    await request.body()
    return Response(b'{"items":[]}', status_code=201, media_type="application/json")


app = Starlette(
    routes=[Route("/api/v1/workspaces/{workspaceID}/orchestration/log", record, methods=["POST"])]
)
