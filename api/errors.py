"""One table maps every error to its response: ``{"error": {"code", "message", "details"}}``."""

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from api.responses import JSON
from orchestrator.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    OrchestrationError,
    TooLarge,
    TooMany,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
)

log = structlog.get_logger(__name__)

STATUS: dict[type[OrchestrationError], int] = {
    InvalidInput: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    TooMany: 429,
    ValidationFailed: 422,
    Unavailable: 503,
}

HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _status(exc: OrchestrationError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


async def orchestration_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OrchestrationError)
    return error_response(exc)


def error_response(exc: OrchestrationError) -> Response:
    status = _status(exc)
    return JSON(error_body(exc.code, exc.message, exc.details), status, headers=_headers(status))


def _headers(status: int) -> dict[str, str] | None:
    if status in (429, 503):
        return {"Retry-After": "1"}
    if status == 401:
        return {"WWW-Authenticate": 'Bearer realm="orchestrator"'}
    return None


async def validation_error(request: Request, exc: Exception) -> Response:
    # msgspec names the path in its message, e.g. "Expected `str`, got `int` - at `$.tool`".
    if isinstance(exc, msgspec.ValidationError):
        return JSON(error_body("VALIDATION_FAILED", str(exc)), 422)
    return JSON(error_body("INVALID_JSON", f"request body is not valid JSON: {exc}"), 400)


async def redis_error(request: Request, exc: Exception) -> Response:
    message = f"Redis unavailable: {exc}; retry (with the same Idempotency-Key for writes)"
    return JSON(error_body("UNAVAILABLE", message), 503, headers={"Retry-After": "1"})


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    return JSON(error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("request.failed", path=request.url.path)
    return JSON(error_body("INTERNAL", "internal error; see the server log"), 500)


Handler = Callable[[Request, Exception], Awaitable[Response]]

HANDLERS: dict[type[Exception], Handler] = {
    OrchestrationError: orchestration_error,
    msgspec.DecodeError: validation_error,
    HTTPException: http_error,
    RedisError: redis_error,
    Exception: internal_error,
}
