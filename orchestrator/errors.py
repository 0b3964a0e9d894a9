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
