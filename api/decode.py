"""Turning a request into typed values, or a clear error naming what to fix."""

import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import Request

from orchestrator.errors import InvalidInput, TooLarge, ValidationFailed
from orchestrator.eventlog import Idempotency
from orchestrator.ids import is_valid_id
from orchestrator.settings import Settings
from orchestrator.toolcalls import ToolCallBatch, ToolCallInput

T = TypeVar("T")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
MAX_DEPTH = 64  # levels of objects and arrays in a free-form body


def settings(request: Request) -> Settings:
    value: Settings = request.state.services.settings
    return value


def path_id(request: Request, name: str) -> str:
    return valid_id(name, request.path_params[name])


def valid_id(name: str, value: str) -> str:
    if not is_valid_id(value):
        raise InvalidInput(
            f"{name} must match [A-Za-z0-9_-]{{1,64}}", {"parameter": name}, code="INVALID_ID"
        )
    return value


async def body(request: Request) -> bytes:
    limit = settings(request).max_body_bytes
    return await limited_body(request.headers.get("content-length"), request.stream(), limit)


async def limited_body(declared: str | None, chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The body from its chunks, refused as soon as it (or its Content-Length) is too large."""
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body exceeds {limit} bytes", {"limit": limit})
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body exceeds {limit} bytes", {"limit": limit})
        parts.append(chunk)
    return b"".join(parts)


def decode(raw: bytes, type_: type[T]) -> T:
    if not raw.strip():
        raise InvalidInput("request body is empty; send a JSON object", code="INVALID_JSON")
    try:
        return msgspec.json.decode(raw, type=type_)
    except UnicodeDecodeError as exc:  # a string of invalid UTF-8 (msgspec checks it lazily)
        raise InvalidInput(f"request body is not valid UTF-8: {exc}", code="INVALID_JSON") from None
    except RecursionError:
        raise InvalidInput("request body is nested too deeply", code="INVALID_JSON") from None


def json_object(raw: bytes) -> dict[str, Any]:
    """A free-form object (a config or caps patch), nested at most ``MAX_DEPTH`` levels: a
    merge patch recurses through it, and must not run out of stack doing so."""
    value = decode(raw, dict[str, Any])
    level: list[Any] = [value]
    for _ in range(MAX_DEPTH):
        level = [c for v in level for c in (v.values() if isinstance(v, dict) else v)]
        level = [c for c in level if isinstance(c, dict | list)]
    if level:
        raise ValidationFailed(f"request body nests objects and arrays deeper than {MAX_DEPTH}")
    return value


def idempotency(request: Request, operation: str, raw: bytes) -> Idempotency | None:
    return idempotency_key(request.headers.get("idempotency-key"), operation, raw)


def idempotency_key(key: str | None, operation: str, raw: bytes) -> Idempotency | None:
    """The ``Idempotency-Key`` header's value, checked, with the body's fingerprint."""
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidInput(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
            {"header": "Idempotency-Key"},
        )
    fingerprint = hashlib.blake2b(raw, digest_size=16).hexdigest()
    return Idempotency(operation=operation, key=key, fingerprint=fingerprint)


def integer(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise InvalidInput(f"{name} must be an integer from {low} to {high}", {"parameter": name})
    return int(raw)


def since_seq(request: Request) -> int | None:
    return resume_point(request.headers.get("last-event-id"), request.query_params)


def resume_point(last_event_id: str | None, params: QueryParams) -> int | None:
    """The seq to resume after: ``Last-Event-ID`` wins over ``?since_seq``."""
    if last_event_id is not None:
        return integer("Last-Event-ID", last_event_id.strip(), 0, 0, 2**63 - 1)
    raw = params.get("since_seq")
    return None if raw is None else integer("since_seq", raw, 0, 0, 2**63 - 1)


def only_params(request: Request, allowed: set[str]) -> None:
    known_params(request.query_params, allowed)


def known_params(params: QueryParams, allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidInput(
            f"unknown query parameter {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}",
            {"parameter": unknown[0]},
        )


def tool_calls(raw: bytes) -> list[ToolCallInput]:
    """One ToolCall object, or ``{"items": [...]}`` for a batch."""
    # A batch nearly always starts with its key: then the body is not parsed twice.
    starts_as_batch = raw.lstrip()[:8] == b'{"items"'
    if starts_as_batch or (b'"items"' in raw and "items" in decode(raw, dict[str, msgspec.Raw])):
        return list(decode(raw, ToolCallBatch).items)
    return [decode(raw, ToolCallInput)]


def boolean(name: str, raw: str | None) -> bool:
    if raw is None:
        return False
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise InvalidInput(f"{name} must be true or false", {"parameter": name})


SESSION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def session_id(request: Request) -> str:
    value: str = request.path_params["sessionID"]
    if not SESSION_ID.fullmatch(value):
        raise InvalidInput(
            "sessionID must match [A-Za-z0-9_.:-]{1,128}",
            {"parameter": "sessionID"},
            code="INVALID_ID",
        )
    return value
