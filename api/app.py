"""The Starlette app: resources built in the lifespan, routes, error table."""

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import structlog
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import Authenticator
from api.contract import OPERATIONS, PREFIX
from api.errors import HANDLERS
from api.metrics import CountRequests, Metrics
from api.openapi import openapi_json
from api.sse import KINDS
from api.state import Services
from orchestrator import questions as question_commands
from orchestrator.connection import pool_options
from orchestrator.context import Orchestrator
from orchestrator.dispatcher import Dispatcher
from orchestrator.eventlog import EventLog
from orchestrator.feed import Feed
from orchestrator.ids import mint, request_id
from orchestrator.importer import Importer
from orchestrator.settings import Settings
from orchestrator.subscribers import SubscriberCounts
from orchestrator.tokens import TokenStore
from orchestrator.vault import store_for
from projections.runner import Projector
from projections.views import RedisReadModels

log = structlog.get_logger(__name__)
POOL_SIZE = 32

ROUTES = [
    *(Route(op.path, op.endpoint, methods=[op.method]) for op in OPERATIONS if not op.scoped),
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Mount(
        PREFIX,
        routes=[Route(op.path, op.endpoint, methods=[op.method]) for op in OPERATIONS if op.scoped],
    ),
]


async def sweep_questions(orch: Orchestrator, feed: Feed, projector: Projector) -> None:
    """Expire due questions in the workspaces this replica is serving."""
    while True:
        await anyio.sleep(orch.settings.question_sweep_s)
        for ws in {*feed.active(), *projector.active()}:
            try:
                await question_commands.expire_due(orch, ws)
            except Exception as exc:  # keep sweeping the others; a failure is logged
                log.warning("questions.sweep_failed", workspace=ws, error=str(exc))


def build(settings: Settings, replica_id: str, redis: Redis, blocking: Redis) -> Services:
    eventlog = EventLog(redis, settings.event_retention, settings.idempotency_ttl_ms)
    projector = Projector(eventlog, idle_s=settings.workspace_idle_s)
    eventlog.on_append(projector.notify)
    models = RedisReadModels(redis, projector, settings.read_your_writes_timeout_s)
    counts = SubscriberCounts(
        redis, replica_id, settings.subscriber_report_ttl_ms, settings.subscriber_report_every_s
    )
    feed = Feed(
        blocking,
        eventlog,
        KINDS,
        settings.subscriber_queue,
        on_count=counts.update,
        streams_per_read=settings.feed_streams_per_read,
    )
    orch = Orchestrator(eventlog, models, settings)
    s = Services(
        settings=settings,
        redis=redis,
        eventlog=eventlog,
        projector=projector,
        orchestrator=orch,
        views=models,
        dispatcher=Dispatcher(orch, redis, replica_id),
        auth=Authenticator(TokenStore(redis), settings),
        feed=feed,
        subscribers=counts,
        metrics=Metrics(),
    )
    s.metrics.bind(s)
    return s


def create_app(settings: Settings) -> Starlette:
    if settings.redis_url is None:
        raise ValueError("settings.redis_url is required (the CLI starts a local Redis if unset)")
    url = settings.redis_url

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        # Requests share a fixed pool; the feed's readers (each one blocking XREAD over up to
        # feed_streams_per_read active workspaces) get their own, so connections grow with
        # active workspaces / feed_streams_per_read, never with SSE clients. A reader holds
        # its connection for good, so that pool has no cap (redis-py's default of 100 starved
        # every reader past the 100th): the feed bounds it. Named, so that `redis-cli CLIENT
        # LIST` tells whose connection is whose. XREAD blocks for 5 s at a time; the socket
        # timeout leaves room for that.
        replica_id = mint("rep")
        options = pool_options(url)
        redis = Redis(
            connection_pool=BlockingConnectionPool.from_url(
                url, max_connections=POOL_SIZE, client_name=f"orch-api:{replica_id}", **options
            )
        )
        blocking = Redis(
            connection_pool=ConnectionPool.from_url(
                url, max_connections=sys.maxsize, client_name=f"orch-feed:{replica_id}", **options
            )
        )
        s = build(settings, replica_id, redis, blocking)
        importer = Importer(s.orchestrator, store_for(settings, redis))
        app.state.services = s  # for end_streams, which the server calls from outside
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(s.eventlog.run_batcher)
                await tg.start(s.projector.run)
                await tg.start(s.feed.run)
                tg.start_soon(s.subscribers.run)
                tg.start_soon(sweep_questions, s.orchestrator, s.feed, s.projector)
                tg.start_soon(s.dispatcher.run)
                await tg.start(importer.run)
                log.info("orchestrator.started", replica=s.subscribers.replica_id)
                yield {"services": s, "vault": importer.store, "importer": importer}
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await s.dispatcher.release()
                tg.cancel_scope.cancel()
        finally:
            await redis.aclose()
            await blocking.aclose()

    return Starlette(
        routes=ROUTES,
        exception_handlers=HANDLERS,
        lifespan=lifespan,
        middleware=[Middleware(BindRequest), Middleware(CountRequests)],
    )


def end_streams(app: Starlette) -> None:
    """The server is shutting down: end every SSE stream now, each with a frame telling its
    client to reconnect, rather than cut them off when the graceful timeout runs out."""
    services: Services | None = getattr(app.state, "services", None)
    if services is not None:
        services.feed.close()


class BindRequest:
    """Binds a request id to every log line of the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(request_id=request_id(), path=scope["path"])
        await self.app(scope, receive, send)
