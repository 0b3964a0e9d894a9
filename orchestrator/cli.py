"""The ``orchestrator`` command: serve the API, rebuild read models."""

import argparse
import asyncio
import gc
import json
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import TypeVar

import msgspec
import structlog
from redis.exceptions import RedisError

from orchestrator.errors import OrchestrationError
from orchestrator.logs import configure
from orchestrator.redis_server import RedisServer
from orchestrator.settings import Settings
from orchestrator.tokens import TokenStore
from orchestrator_sdk.cli import (
    API_ERROR,
    EXIT_CODES,
    INTERRUPTED,
    UNREACHABLE,
    USAGE,
    Parser,
    fail,
    unexpected,
    workspace_id,
)

T = TypeVar("T")

log = structlog.get_logger(__name__)
GC_THRESHOLDS = (50_000, 20, 100)  # CPython's defaults: (700, 10, 10)


class Unavailable(Exception):
    """Redis cannot be reached or started."""


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
    if server.running_elsewhere():
        # `make run` is up: commands such as `token` and `rebuild` use its Redis.
        yield replace(settings, redis_url=server.url)
        return
    try:
        server.start()
    except (RuntimeError, OSError) as exc:  # no redis-server, the port taken, a read-only dir
        raise Unavailable(f"cannot start a local Redis (or set REDIS_URL): {exc}") from exc
    log.info("redis.embedded", url=server.url, data=str(server.data_dir))
    try:
        yield replace(settings, redis_url=server.url)
    finally:
        server.stop()


def serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    from api.app import create_app, end_streams
    from api.auth import AuthGate
    from api.fastpath import FastPath
    from orchestrator.http_limits import ReadLimits, http_protocol

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # Before uvicorn waits for open responses to finish: SSE streams never would.
            end_streams(app)
            await super().shutdown(sockets)

    # Thousands of long-lived SSE connections keep ~1.8 M objects tracked by the collector;
    # with CPython's default thresholds a broadcast's allocations set off full collections
    # that stalled every client for over a second (bench/capacity.py). Collect young objects
    # far less often: cyclic garbage lives a little longer.
    gc.set_threshold(*GC_THRESHOLDS)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: make that an exit
    # that unwinds, so the local Redis below is stopped rather than orphaned.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with redis_for(settings) as found:
        ready = secured(args, found)
        if ready is None:
            return USAGE
        print(f"orchestrator serving on http://{args.host}:{args.port}", file=sys.stderr)
        app = create_app(ready)
        config = uvicorn.Config(
            AuthGate(FastPath(app)),
            host=args.host,
            port=args.port,
            log_level=args.log_level.lower(),
            access_log=args.access_log,
            loop=args.loop,
            http=http_protocol(args.http, ReadLimits.from_settings(ready)),
            ws="none",  # no WebSocket routes: an Upgrade request is served as plain HTTP
            timeout_keep_alive=ready.keep_alive_s,
            h11_max_incomplete_event_size=ready.max_head_bytes,
            timeout_graceful_shutdown=5,
        )
        server = Server(config)
        try:
            with suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn shut down, then re-raised it
                server.run()
        except SystemExit as exc:  # uvicorn's own exit when it cannot bind or start the app
            if exc.code != STARTUP_FAILURE:
                raise
        if not server.started:
            fail(f"could not serve http://{args.host}:{args.port} (the log above says why)")
            return UNREACHABLE
    return 0


LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def secured(args: argparse.Namespace, settings: Settings) -> Settings | None:
    """The settings to serve with, or None to refuse.

    Loopback (or ``--insecure``): tokens are enforced once one exists. Any other address:
    always enforced, and refused while no token exists, since nobody could use it.
    """
    if args.host in LOOPBACK or args.insecure or settings.auth == "required":
        if args.host not in LOOPBACK and settings.auth != "required":
            log.warning("auth.optional", reason="--insecure", host=args.host)
        return settings
    try:
        tokens = asyncio.run(_with_tokens(settings, lambda store: store.count()))
    except (RedisError, OSError) as exc:
        log.warning("auth.unverified", error=str(exc), host=args.host)
        tokens = -1  # Redis is down: serve, with tokens required, and recover with it
    if tokens == 0:
        fail(
            f"refusing to serve {args.host} without authentication: no API token exists. "
            "Create one (`orchestrator token create --workspace WS` or `--admin`), or pass "
            "--insecure to serve it open."
        )
        return None
    return replace(settings, auth="required")


async def _with_tokens(settings: Settings, use: Callable[[TokenStore], Awaitable[T]]) -> T:
    from orchestrator.connection import connect

    assert settings.redis_url is not None
    async with connect(settings.redis_url) as redis:
        return await use(TokenStore(redis))


def token(args: argparse.Namespace, settings: Settings) -> int:
    with redis_for(settings) as ready:
        if args.action == "create":
            workspace = None if args.admin else args.workspace
            made, secret = asyncio.run(
                _with_tokens(ready, lambda store: store.create(args.name, workspace))
            )
            print(
                json.dumps({**msgspec.to_builtins(made), "token": secret})
                if args.json
                else f"{secret}\n(shown once) id {made.id}, scope {made.scope}"
                + (f" {made.workspaceID}" if made.workspaceID else "")
            )
            return 0
        if args.action == "list":
            found = asyncio.run(_with_tokens(ready, lambda store: store.list()))
            if args.json:
                print(json.dumps(msgspec.to_builtins(found)))
            for t in [] if args.json else found:
                print(f"{t.id}\t{t.scope}\t{t.workspaceID or '*'}\t{t.name}")
            return 0
        try:
            gone = asyncio.run(_with_tokens(ready, lambda store: store.revoke(args.id)))
        except OrchestrationError as exc:
            fail(exc.message)
            return API_ERROR
        print(f"revoked {gone.id}")
        return 0


def rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from orchestrator.connection import connect
    from orchestrator.eventlog import EventLog
    from projections.runner import Projector

    async def run(url: str) -> int:
        async with connect(url) as redis:
            eventlog = EventLog(redis, settings.event_retention, settings.idempotency_ttl_ms)
            projector = Projector(eventlog)
            reached = await projector.rebuild(args.workspace, args.projection or None)
            print(f"rebuilt {args.workspace} up to seq {reached}")
            return 0

    with redis_for(settings) as ready:
        assert ready.redis_url is not None
        return asyncio.run(run(ready.redis_url))


def parser() -> argparse.ArgumentParser:
    top = Parser(
        prog="orchestrator",
        description=__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = top.add_subparsers(dest="command", required=True)

    s = commands.add_parser("serve", help="serve the HTTP API (REDIS_URL, or a local Redis)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--access-log", action="store_true", help="log every request")
    s.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    s.add_argument("--http", default="auto", choices=["auto", "h11", "httptools"])
    s.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback address even though no API token exists",
    )
    s.set_defaults(handler=serve)

    t = commands.add_parser("token", help="create, list and revoke API tokens")
    actions = t.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a token (printed once)")
    scope = create.add_mutually_exclusive_group(required=True)
    scope.add_argument("--workspace", type=workspace_id, help="the one workspace the token reaches")
    scope.add_argument("--admin", action="store_true", help="a token for every workspace")
    create.add_argument("--name", default="", help="what the token is for")
    create.add_argument("--json", action="store_true")
    listing = actions.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--json", action="store_true")
    revoke = actions.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id")
    t.set_defaults(handler=token)

    r = commands.add_parser("rebuild", help="drop read models and rebuild them from the log")
    r.add_argument("workspace", type=workspace_id, help="workspace id")
    r.add_argument(
        "--projection",
        action="append",
        choices=["config", "log", "questions", "sessions", "plan"],
        help="rebuild only this one (repeatable); default: all",
    )
    r.set_defaults(handler=rebuild)

    from orchestrator.demo import add_command as add_demo
    from orchestrator_sdk.cli import add_commands as add_client_commands

    add_demo(commands)
    add_client_commands(commands)  # tail, log, questions, todo, dump, purge, export, import
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure(args.log_level)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        fail(str(exc))
        return USAGE
    try:
        code: int = args.handler(args, settings)
    except (Unavailable, RedisError) as exc:
        fail(f"Redis: {exc}" if isinstance(exc, RedisError) else str(exc))
        return UNREACHABLE
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception as exc:
        return unexpected(exc)
    return code


if __name__ == "__main__":
    sys.exit(main())
