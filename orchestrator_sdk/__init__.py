"""A Python client of the orchestration API: ``AsyncClient`` (httpx, async) and its sync twin
``Client``, one method per operation of ``api/contract.py``, named by its operation id.

    async with AsyncClient("http://127.0.0.1:8000", "ws_demo", token=...) as client:
        todo = await client.get_todo()                  # an orchestrator.results.TodoDocument
        async for item in client.stream_events(since_seq=0):
            match item:
                case Event(seq=seq, type=type_):        # every event, once, in order
                    ...
                case Reset():                           # the log was cut: rebuild state
                    ...

Answers decode into the service's own msgspec types (``orchestrator.results``,
``orchestrator.model``, ``orchestrator.events``); errors raise an ``ApiError`` subclass per
status. The package needs httpx and msgspec, not the server's dependencies.
"""

from orchestrator_sdk.client import AsyncClient, Client, Operations, Retries
from orchestrator_sdk.errors import (
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    SdkError,
    ServerError,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnexpectedResponse,
    Unprocessable,
    Unreachable,
)
from orchestrator_sdk.sse import Event, LoggedCall, Reset
from orchestrator_sdk.streams import AsyncEventStream, EventStream

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncEventStream",
    "BadRequest",
    "Client",
    "ClientError",
    "Conflict",
    "Event",
    "EventStream",
    "Forbidden",
    "LoggedCall",
    "MethodNotAllowed",
    "NotFound",
    "Operations",
    "PayloadTooLarge",
    "Reset",
    "Retries",
    "SdkError",
    "ServerError",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnexpectedResponse",
    "Unprocessable",
    "Unreachable",
]
