from typing import Any


class OrchestrationError(Exception):
    """A failure a client can act on: a stable code, a message, and details."""

    code = "ERROR"

    def __init__(self, message: str, details: dict[str, Any] | None = None, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if code:
            self.code = code


class InvalidInput(OrchestrationError):
    code = "INVALID_INPUT"


class ValidationFailed(OrchestrationError):
    code = "VALIDATION_FAILED"


class NotFound(OrchestrationError):
    code = "NOT_FOUND"


class Conflict(OrchestrationError):
    code = "CONFLICT"


class TooLarge(OrchestrationError):
    code = "PAYLOAD_TOO_LARGE"


class Unavailable(OrchestrationError):
    """Redis could not be reached; the request may be retried (with its Idempotency-Key)."""

    code = "UNAVAILABLE"


class Unauthenticated(OrchestrationError):
    """No token, or one that is unknown or revoked."""

    code = "UNAUTHENTICATED"


class Forbidden(OrchestrationError):
    """A valid token that does not reach this workspace or operation."""

    code = "FORBIDDEN"


class TooMany(OrchestrationError):
    """A per-client bound is reached (streams per token, questions per session)."""

    code = "TOO_MANY_REQUESTS"
