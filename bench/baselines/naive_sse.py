"""The naive fan-out baseline: every SSE subscriber does its own blocking ``XREAD``.

What one would write first: Starlette + sse-starlette's ``EventSourceResponse``, and per
subscriber a loop of ``XREAD BLOCK`` (redis-py asyncio) on the workspace's stream, from the
seq it asked for (``?since_seq=N``) or from now. The client's pool is unbounded, so every
subscriber blocked in ``XREAD`` holds its own Redis connection, and every event costs one
reply, one parse and one encoding per subscriber. Same key layout (``orch:{ws}:events``, ids
``<seq>-0``, fields ``type``/``payload``) and the same frames as the service's ``/events``.

Served like the real server: one uvicorn process, uvloop, httptools, no access log.

    python -m bench.baselines.naive_sse --port 8100 --redis-url redis://127.0.0.1:6379/0
"""

import argparse
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from redis.asyncio import Redis
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bench.sse_load import raise_nofile
from orchestrator.keys import WorkspaceKeys
from orchestrator.replies import stream_entries

CLIENT_NAME = "naive-sse"
BLOCK_MS = 5000
MAX_CONNECTIONS = 100_000  # one per subscriber, so: unbounded
PATH = "/api/v1/workspaces/{workspaceID}/orchestration/events"


def frame(entry_id: bytes, fields: Mapping[bytes, bytes]) -> ServerSentEvent:
    seq, kind = entry_id.split(b"-", 1)[0].decode(), fields[b"type"].decode()
    data = f'{{"seq":{seq},"type":"{kind}","payload":{fields[b"payload"].decode()}}}'
    return ServerSentEvent(data=data, event=kind, id=seq)


async def subscribe(redis: Redis, stream: str, since: str | None) -> AsyncIterator[ServerSentEvent]:
    last: str | bytes = "$" if since is None else f"{int(since)}-0"
    while True:
        reply: Any = await redis.xread({stream: last}, block=BLOCK_MS)
        for _, entries in reply or ():
            for entry_id, fields in stream_entries(entries):
                last = entry_id
                yield frame(entry_id, fields)


def create_app(redis_url: str) -> Starlette:
    # redis-py 8 defaults to a pool of 100 and a 5 s socket timeout: lift both, as one must
    # for a blocking read per subscriber (the service's readers use the same 30 s timeout).
    redis = Redis.from_url(
        redis_url, client_name=CLIENT_NAME, max_connections=MAX_CONNECTIONS, socket_timeout=30
    )

    async def events(request: Request) -> Response:
        stream = WorkspaceKeys(request.path_params["workspaceID"]).events
        since = request.query_params.get("since_seq")
        return EventSourceResponse(subscribe(redis, stream, since))

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await redis.aclose()

    routes = [Route(PATH, events), Route("/healthz", healthz)]
    return Starlette(routes=routes, lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines.naive_sse")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args(argv)
    raise_nofile()
    uvicorn.run(
        create_app(args.redis_url),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
