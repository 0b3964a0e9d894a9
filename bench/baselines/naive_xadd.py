"""Baseline: the naive handler. Parse the JSON, one ``XADD`` per request through redis-py,
no validation, no seq, no idempotency, no batching."""

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Redis]]:
    redis = Redis.from_url(os.environ["REDIS_URL"])
    yield {"redis": redis}
    await redis.aclose()


async def record(request: Request) -> Response:
    call = json.loads(await request.body())
    redis: Redis = request.state.redis
    key = f"naive:{{{request.path_params['workspaceID']}}}:events"
    entry_id = await redis.xadd(key, {"type": "tool.call", "payload": json.dumps(call)})
    return JSONResponse({"items": [{"id": str(entry_id)}]}, status_code=201)


app = Starlette(
    routes=[Route("/api/v1/workspaces/{workspaceID}/orchestration/log", record, methods=["POST"])],
    lifespan=lifespan,
)
