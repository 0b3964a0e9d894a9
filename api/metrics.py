"""``GET /metrics``: Prometheus text exposition of this replica.

Request counts and latencies are counted by an ASGI middleware, per endpoint (the route's
function name, so label values stay few); the rest is read from the services at scrape time.
Each app has its own registry: two apps in one process (tests) do not share counters.
"""

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.state import Services, services

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "orch_http_requests",
            "HTTP requests answered, by endpoint, method and status",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "orch_http_request_seconds",
            "Time to the response's first byte, by endpoint",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self._services: Services | None = None
        self.registry.register(_ServiceCollector(self))
        self._children: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}

    def count(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """One response, and the time to its first byte. Each label combination's metrics
        are looked up once (``labels()`` takes a lock and builds a key on every call)."""
        children = self._children.get((endpoint, method, status))
        if children is None:
            children = (
                self.latency.labels(endpoint),
                self.requests.labels(endpoint, method, str(status)),
            )
            self._children[endpoint, method, status] = children
        children[0].observe(seconds)
        children[1].inc()

    def bind(self, s: Services) -> None:
        self._services = s


class _ServiceCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.metrics._services
        if s is None:
            return
        yield _gauge("orch_events_appended", "events appended by this replica", s.eventlog.appended)
        yield _gauge(
            "orch_sse_subscribers",
            "SSE clients connected to this replica",
            sum(s.feed.count(ws) for ws in s.feed.active()),
        )
        yield _gauge("orch_feed_workspaces", "workspaces with a live reader", len(s.feed.active()))
        yield _gauge(
            "orch_projected_workspaces",
            "workspaces this replica projects",
            len(s.projector.active()),
        )
        yield _gauge(
            "orch_dispatched_workspaces",
            "workspaces this replica holds the dispatcher lease of",
            len(s.dispatcher.leading),
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


async def metrics(request: Request) -> Response:
    registry = services(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)


class CountRequests:
    """ASGI middleware: count each response by endpoint, and time it to its first byte."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                endpoint = getattr(scope.get("endpoint"), "__name__", "none")
                m: Metrics = scope["state"]["services"].metrics
                m.count(endpoint, scope["method"], status[0], time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, send_counted)
