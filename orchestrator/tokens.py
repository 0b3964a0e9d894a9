"""API tokens: bearer secrets, each scoped to one workspace or to all (admin).

A token is 32 random bytes (``orch_`` + URL-safe base64), shown once when created. Redis keeps
only its SHA-256 digest (the secret has 256 bits of entropy, so a slow password hash buys
nothing) and a record naming its scope; revoking deletes the record.
"""

import hashlib
import secrets
from typing import Literal

import msgspec
from redis.asyncio import Redis

from orchestrator.clock import now_ms
from orchestrator.errors import NotFound
from orchestrator.ids import is_valid_id, mint
from orchestrator.keys import TOKEN_IDS, TOKENS
from orchestrator.replies import as_str

PREFIX = "orch_"
Scope = Literal["workspace", "admin"]


class Token(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    id: str
    name: str
    scope: Scope
    workspaceID: str | None = None
    created_at: int

    def reaches(self, workspace_id: str) -> bool:
        return self.scope == "admin" or self.workspaceID == workspace_id


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def create(self, name: str, workspace_id: str | None) -> tuple[Token, str]:
        """A new token for ``workspace_id`` (admin when None); returns it and its secret."""
        if workspace_id is not None and not is_valid_id(workspace_id):
            raise ValueError(f"invalid workspace id {workspace_id!r}")
        token = Token(
            id=mint("tok"),
            name=name,
            scope="admin" if workspace_id is None else "workspace",
            workspaceID=workspace_id,
            created_at=now_ms(),
        )
        secret = PREFIX + secrets.token_urlsafe(32)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(TOKENS, digest(secret), msgspec.json.encode(token))
        pipe.hset(TOKEN_IDS, token.id, digest(secret))
        await pipe.execute()
        return token, secret

    async def lookup(self, secret: str) -> Token | None:
        if not secret.startswith(PREFIX):
            return None
        raw = await self.redis.hget(TOKENS, digest(secret))
        return None if raw is None else msgspec.json.decode(raw, type=Token)

    async def list(self) -> list[Token]:
        raw = await self.redis.hvals(TOKENS)
        return sorted((msgspec.json.decode(r, type=Token) for r in raw), key=lambda t: t.id)

    async def revoke(self, token_id: str) -> Token:
        found = await self.redis.hget(TOKEN_IDS, token_id)
        raw = None if found is None else await self.redis.hget(TOKENS, as_str(found))
        if found is None or raw is None:
            raise NotFound(f"no token {token_id}", {"id": token_id}, code="TOKEN_NOT_FOUND")
        pipe = self.redis.pipeline(transaction=False)
        pipe.hdel(TOKENS, as_str(found))
        pipe.hdel(TOKEN_IDS, token_id)
        await pipe.execute()
        return msgspec.json.decode(raw, type=Token)

    async def count(self) -> int:
        return int(await self.redis.hlen(TOKENS))
