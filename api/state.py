"""What the lifespan builds and every request sees as ``request.state``."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from api.auth import Authenticator

if TYPE_CHECKING:
    from api.metrics import Metrics
from orchestrator.context import Orchestrator
from orchestrator.dispatcher import Dispatcher
from orchestrator.eventlog import EventLog
from orchestrator.feed import Feed
from orchestrator.settings import Settings
from orchestrator.subscribers import SubscriberCounts
from projections.runner import Projector
from projections.views import RedisReadModels


@dataclass(frozen=True)
class Services:
    settings: Settings
    redis: Redis
    eventlog: EventLog
    projector: Projector
    orchestrator: Orchestrator
    views: RedisReadModels
    feed: Feed
    subscribers: SubscriberCounts
    dispatcher: Dispatcher
    auth: Authenticator
    metrics: "Metrics"


def services(request: object) -> Services:
    value: Services = request.state.services  # type: ignore[attr-defined]
    return value
