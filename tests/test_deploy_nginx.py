"""deploy/nginx.conf, read as nginx reads it: which location each route of the contract
falls in. The streaming location must take every text/event-stream route (unbuffered, with a
long read timeout) and nothing else."""

import re

import pytest

from api.contract import OPERATIONS, PREFIX, Operation
from tests.servers import ROOT

CONF = (ROOT / "deploy" / "nginx.conf").read_text()
LOCATION = re.compile(r"location\s+~\s+(\S+)\s*\{([^}]*)\}")


def streaming_location() -> tuple[re.Pattern[str], str]:
    """The one regex location: its pattern (nginx's PCRE; this one is Python-compatible) and
    its directives."""
    found = LOCATION.findall(CONF)
    assert len(found) == 1, found
    pattern, body = found[0]
    return re.compile(pattern), body


def sample_path(op: Operation) -> str:
    """The operation's path as a client requests it: ids filled in."""
    path = (PREFIX if op.scoped else "") + op.path
    return re.sub(r"\{[^}]+\}", "ws_01HXYZ-a", path)


def ids(op: Operation) -> str:
    return f"{op.method} {op.path}"


@pytest.mark.parametrize("op", OPERATIONS, ids=ids)
def test_only_the_streaming_routes_take_the_streaming_location(op: Operation) -> None:
    pattern, _ = streaming_location()
    assert bool(pattern.search(sample_path(op))) is op.stream, sample_path(op)


def test_the_contract_has_both_streams() -> None:
    streams = sorted(op.path for op in OPERATIONS if op.stream)
    assert streams == ["/events", "/log/stream"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/workspaces/ws_1/orchestration/log/stream/x",
        "/api/v1/workspaces/ws_1/log/stream",  # not a route: the prefix is part of it
        "/api/v1/workspaces/a/b/orchestration/events",
        "/api/v1/workspaces/ws_1/orchestration/eventsx",
    ],
)
def test_near_misses_are_not_streams(path: str) -> None:
    pattern, _ = streaming_location()
    assert not pattern.search(path)


def test_the_streaming_location_is_unbuffered_with_a_long_read_timeout() -> None:
    _, body = streaming_location()
    assert re.search(r"proxy_buffering\s+off;", body)
    timeout = re.search(r"proxy_read_timeout\s+(\d+)([smh]);", body)
    assert timeout is not None
    seconds = int(timeout[1]) * {"s": 1, "m": 60, "h": 3600}[timeout[2]]
    assert seconds > 15 * 4  # well above the 15 s heartbeat


def test_slow_clients_and_connections_are_bounded() -> None:
    """The proxy ends half-sent requests and caps connections per client (deploy/README.md)."""
    for directive in (
        r"client_header_timeout\s+\d+s;",
        r"client_body_timeout\s+\d+s;",
        r"limit_conn_zone\s+\$binary_remote_addr\s+zone=(\w+):",
        r"limit_conn\s+per_client\s+\d+;",
    ):
        assert re.search(directive, CONF), directive
