"""GET /metrics: Prometheus text of one replica, counted per endpoint."""

import httpx

from tests.servers import ServerProcess
from tests.sse_client import open_stream

CALL = {"tool": "fs.read", "sessionID": "s1", "agentName": "a", "status": "ok"}


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name{labels}`` in an exposition."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        if metric == (f"{name}{{{wanted}}}" if labels else name):
            return float(value)
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


def test_metrics_count_requests_events_and_subscribers(
    server: ServerProcess, workspace: str
) -> None:
    url = server.workspace_url(workspace)
    before = httpx.get(server.base_url + "/metrics").text
    appended = sample(before, "orch_events_appended")
    with httpx.Client(timeout=10) as client:
        for _ in range(3):
            assert client.post(url + "/log", json=CALL).status_code == 201
        assert client.get(url + "/todo/entries/nope").status_code == 404
        with open_stream(client, url + "/events"):
            response = httpx.get(server.base_url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    labels = {"endpoint": "post_log", "method": "POST", "status": "201"}
    assert sample(text, "orch_http_requests_total", **labels) >= 3
    missing = {"endpoint": "get_entry", "method": "GET", "status": "404"}
    assert sample(text, "orch_http_requests_total", **missing) >= 1
    assert sample(text, "orch_http_request_seconds_count", endpoint="post_log") >= 3
    assert sample(text, "orch_events_appended") >= appended + 3
    assert sample(text, "orch_sse_subscribers") >= 1
    assert sample(text, "orch_feed_workspaces") >= 1
