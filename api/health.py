"""Service-level probes: the process is up; Redis answers and projections keep up."""

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from api.responses import JSON
from api.state import services
from orchestrator.errors import Unavailable

MAX_PROJECTION_LAG = 10_000


async def healthz(request: Request) -> Response:
    return JSON({"status": "ok"})


async def readyz(request: Request) -> Response:
    s = services(request)
    active = s.projector.active()
    try:
        await s.redis.ping()
        lags = {ws: await s.eventlog.last_seq(ws) - reached for ws, reached in active.items()}
    except (RedisError, OSError, Unavailable) as exc:
        return JSON({"status": "unavailable", "redis": str(exc)}, 503)
    lagging = {ws: lag for ws, lag in lags.items() if lag > MAX_PROJECTION_LAG}
    body = {"status": "lagging" if lagging else "ready", "redis": "ok", "lagging": lagging}
    return JSON(body, 503 if lagging else 200)
