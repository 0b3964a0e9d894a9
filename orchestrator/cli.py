"""The ``orchestrator`` command: serve the API, rebuild read models."""

import argparse
import asyncio
import gc
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import structlog

from orchestrator.logs import configure
from orchestrator.redis_server import RedisServer
from orchestrator.settings import Settings

log = structlog.get_logger(__name__)
GC_THRESHOLDS = (50_000, 20, 100)  # CPython's defaults: (700, 10, 10)


@contextmanager
def redis_for(settings: Settings) -> Iterator[Settings]:
    """``settings`` with a Redis to use: ``REDIS_URL``, else a local server whose data
    lives under the data folder (append-only file, so a restart keeps it)."""
    if settings.redis_url is not None:
        yield settings
        return
    # A fixed port: a second server on the same data folder fails to bind before it can touch
    # the append-only file, and `redis-cli -p 6390` finds it.
    server = RedisServer(settings.data_dir / "redis", port=settings.embedded_redis_port)
    server.start()
    log.info("redis.embedded", url=server.url, data=str(server.data_dir))
    try:
        yield replace(settings, redis_url=server.url)
    finally:
        server.stop()


def serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.app import create_app
    from api.fastpath import SSEFastPath

    # Thousands of long-lived SSE connections keep ~1.8 M objects tracked by the collector;
    # with CPython's default thresholds a broadcast's allocations set off full collections
    # that stalled every client for over a second (bench/capacity.py). Collect young objects
    # far less often: cyclic garbage lives a little longer.
    gc.set_threshold(*GC_THRESHOLDS)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: make that an exit
    # that unwinds, so the local Redis below is stopped rather than orphaned.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with redis_for(settings) as ready:
        print(f"orchestrator serving on http://{args.host}:{args.port}", file=sys.stderr)
        uvicorn.run(
            SSEFastPath(create_app(ready)),
            host=args.host,
            port=args.port,
            log_level=args.log_level.lower(),
            access_log=args.access_log,
            loop=args.loop,
            http=args.http,
            timeout_graceful_shutdown=5,
        )
    return 0


def rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from redis.asyncio import Redis

    from orchestrator.eventlog import EventLog
    from projections.runner import Projector

    async def run(url: str) -> int:
        async with Redis.from_url(url) as redis:
            eventlog = EventLog(redis, settings.event_retention, settings.idempotency_ttl_ms)
            projector = Projector(eventlog)
            reached = await projector.rebuild(args.workspace, args.projection or None)
            print(f"rebuilt {args.workspace} up to seq {reached}")
            return 0

    with redis_for(settings) as ready:
        assert ready.redis_url is not None
        return asyncio.run(run(ready.redis_url))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="orchestrator", description=__doc__)
    top.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = top.add_subparsers(dest="command", required=True)

    s = commands.add_parser("serve", help="serve the HTTP API (REDIS_URL, or a local Redis)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--access-log", action="store_true", help="log every request")
    s.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    s.add_argument("--http", default="auto", choices=["auto", "h11", "httptools"])
    s.set_defaults(handler=serve)

    r = commands.add_parser("rebuild", help="drop read models and rebuild them from the log")
    r.add_argument("workspace", help="workspace id")
    r.add_argument(
        "--projection",
        action="append",
        choices=["config", "log", "questions", "sessions"],
        help="rebuild only this one (repeatable); default: all",
    )
    r.set_defaults(handler=rebuild)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure(args.log_level)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"orchestrator: {exc}", file=sys.stderr)
        return 2
    handler = args.handler
    code: int = handler(args, settings)
    return code


if __name__ == "__main__":
    sys.exit(main())
