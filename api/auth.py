"""Bearer-token authentication, ahead of every workspace route (SSE fast path included).

Enforced once any token exists (``ORCH_AUTH=auto``, the default) or always
(``ORCH_AUTH=required``). A token reaches its own workspace, or every one if admin; any other
workspace is 403. Lookups are cached for ``ORCH_AUTH_CACHE_S``, so a revoked token stops
working within that time on every replica. Each token may hold a bounded number of SSE
streams per replica (429 beyond).
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response
from orchestrator.errors import (
    Forbidden,
    OrchestrationError,
    TooMany,
    Unauthenticated,
    Unavailable,
)
from orchestrator.settings import Settings
from orchestrator.tokens import Token, TokenStore, digest

WORKSPACES = "/api/v1/workspaces/"
STREAM_SUFFIXES = ("/orchestration/events", "/orchestration/log/stream")
STREAM_METHODS = ("GET", "HEAD")
MAX_CACHED = 10_000


class Authenticator:
    def __init__(self, store: TokenStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._enforced: tuple[bool, float] = (settings.auth == "required", 0.0)
        self._cache: dict[str, tuple[Token | None, float]] = {}
        self.streams: dict[str, int] = {}  # token id -> open SSE streams on this replica

    async def enforced(self) -> bool:
        if self.settings.auth == "required":
            return True
        value, until = self._enforced
        if time.monotonic() >= until:
            value = await self.store.count() > 0
            self._enforced = (value, time.monotonic() + self.settings.auth_cache_s)
        return value

    async def token(self, secret: str) -> Token | None:
        key = digest(secret)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() < cached[1]:
            return cached[0]
        found = await self.store.lookup(secret)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (found, time.monotonic() + self.settings.auth_cache_s)
        return found

    async def check(self, scope: Scope, workspace_id: str) -> Token | None:
        """The request's token (None when authentication is off), or the error to answer."""
        if not await self.enforced():
            return None
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"").decode(
            "latin-1"
        )
        kind, _, secret = header.partition(" ")
        if kind.lower() != "bearer" or not secret.strip():
            raise Unauthenticated("send `Authorization: Bearer <token>` (see `orchestrator token`)")
        token = await self.token(secret.strip())
        if token is None:
            raise Unauthenticated("the token is unknown or revoked")
        if not token.reaches(workspace_id):
            raise Forbidden(
                f"this token is scoped to workspace {token.workspaceID}",
                {"workspaceID": workspace_id},
                code="WORKSPACE_FORBIDDEN",
            )
        return token

    @contextmanager
    def stream(self, token: Token) -> Iterator[None]:
        held = self.streams.get(token.id, 0)
        limit = self.settings.max_streams_per_token
        if held >= limit:
            raise TooMany(
                f"this token already holds {held} SSE streams on this replica (limit {limit}); "
                "close one first",
                {"limit": limit},
                code="TOO_MANY_STREAMS",
            )
        self.streams[token.id] = held + 1
        try:
            yield
        finally:
            left = self.streams[token.id] - 1
            if left:
                self.streams[token.id] = left
            else:
                del self.streams[token.id]


def token_name(request: Request) -> str | None:
    """The name of the token the request came with (None when authentication is off)."""
    token: Token | None = getattr(request.state, "token", None)
    return None if token is None else token.name


class AuthGate:
    """ASGI middleware: the outermost layer, so nothing reaches a workspace unchecked."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(WORKSPACES):
            await self.app(scope, receive, send)
            return
        auth: Authenticator = scope["state"]["services"].auth
        workspace_id = path[len(WORKSPACES) :].partition("/")[0]
        try:
            try:
                token = await auth.check(scope, workspace_id)
            except (RedisError, OSError) as exc:
                raise Unavailable(f"Redis unavailable: {exc}; retry") from exc
            # Per request (each request's state is a copy): who writes, e.g. a spec's author.
            scope["state"]["token"] = token
            # HEAD is counted as the GET whose headers it answers: refused alike at the limit.
            if (
                token is None
                or scope["method"] not in STREAM_METHODS
                or not path.endswith(STREAM_SUFFIXES)
            ):
                await self.app(scope, receive, send)
                return
            with auth.stream(token):
                await self.app(scope, receive, send)
        except OrchestrationError as exc:
            await error_response(exc)(scope, receive, send)
