"""What a call can fail with: an error answer (``ApiError``, one class per status), no answer
at all (``Unreachable``), or an answer this SDK cannot read (``UnexpectedResponse``)."""

from typing import Any

import msgspec


class SdkError(Exception):
    """Base of every error the SDK raises."""


class ApiError(SdkError):
    """The service answered with an error: ``{"error": {"code", "message", "details"}}``."""

    status: int = 0

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.retry_after = retry_after


class ClientError(ApiError):
    """4xx: the request must change before it can succeed."""


class BadRequest(ClientError):
    status = 400


class Unauthorized(ClientError):
    status = 401


class Forbidden(ClientError):
    status = 403


class NotFound(ClientError):
    status = 404


class MethodNotAllowed(ClientError):
    status = 405


class Conflict(ClientError):
    """409: a stale ``version``, an illegal transition, a lost race (``VERSION_CONFLICT``)."""

    status = 409


class PayloadTooLarge(ClientError):
    status = 413


class Unprocessable(ClientError):
    """422: the body decoded but is invalid (``VALIDATION_FAILED``, ``CYCLE``, ...)."""

    status = 422


class TooManyRequests(ClientError):
    status = 429


class ServerError(ApiError):
    """5xx: the service could not answer; retrying later may succeed."""


class ServiceUnavailable(ServerError):
    """503: Redis is unreachable. The SDK retries these by itself before raising."""

    status = 503


class Unreachable(SdkError):
    """No answer: the connection failed (or broke) on every attempt."""


class UnexpectedResponse(SdkError):
    """An answer that is not what the operation promises (a body that does not decode)."""


BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        Conflict,
        PayloadTooLarge,
        Unprocessable,
        TooManyRequests,
        ServiceUnavailable,
    )
}


class _Detail(msgspec.Struct):
    code: str
    message: str
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class _Envelope(msgspec.Struct):
    error: _Detail


_ENVELOPE = msgspec.json.Decoder(_Envelope)


def api_error(status: int, body: bytes, retry_after: str | None = None) -> ApiError:
    """The error an answer with this status and body stands for. A body in another shape (a
    proxy's error page) keeps its first line as the message, with the code ``HTTP_<status>``."""
    try:
        detail = _ENVELOPE.decode(body).error
        code, message, details = detail.code, detail.message, detail.details
    except msgspec.DecodeError:
        text = body.decode("utf-8", "replace").strip()
        code, message, details = f"HTTP_{status}", text.splitlines()[0] if text else "", {}
    cls = BY_STATUS.get(status) or (ServerError if status >= 500 else ClientError)
    return cls(status, code, message, details, _seconds(retry_after))


def _seconds(header: str | None) -> float | None:
    try:
        return None if header is None else max(0.0, float(header))
    except ValueError:
        return None  # an HTTP date: not sent by this service
