"""The Python SDK against live servers on a real Redis: every operation, sync and async; typed
errors; idempotent retries; streams that resume across a server restart with no gap and no
duplicate; and the package importing without the server's dependencies."""

import inspect
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest

from api.contract import OPERATIONS
from orchestrator import results as r
from orchestrator.documents import PlanDocument
from orchestrator.events import ConfigUpdated, QuestionItem, QuestionOption, ToolRef
from orchestrator.transfer import ImportJob
from orchestrator_sdk import (
    ApiError,
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    Event,
    LoggedCall,
    NotFound,
    Reset,
    Retries,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
    Unreachable,
)
from orchestrator_sdk.inputs import ToolCallInput
from orchestrator_sdk.operations import ROUTES, Operation, StreamOperation
from tests.servers import ROOT, ServerProcess

FAST = Retries(attempts=3, backoff_s=0.01, max_backoff_s=0.05)
Do = Callable[..., Awaitable[Any]]


# The operation table


def test_every_operation_of_the_contract_is_a_method_of_both_clients() -> None:
    for op in OPERATIONS:
        kind = StreamOperation if op.stream else Operation
        for cls in (AsyncClient, Client):
            method = inspect.getattr_static(cls, op.id, None)
            assert isinstance(method, kind), f"{cls.__name__}.{op.id} is {method!r}"
        route = ROUTES[op.id]
        assert (route.method, route.path, route.scoped) == (op.method, op.path, op.scoped), op.id
    # Variants (export_todo_markdown) call a route of the contract too.
    served = {(op.method, op.path, op.scoped) for op in OPERATIONS}
    for name, route in ROUTES.items():
        assert (route.method, route.path, route.scoped) in served, name


def test_methods_are_coroutines_on_the_async_client_and_plain_on_the_sync_one() -> None:
    a, s = AsyncClient("http://x", "ws"), Client("http://x", "ws")
    assert inspect.iscoroutinefunction(a.get_todo)
    assert not inspect.iscoroutinefunction(s.get_todo)
    assert list(inspect.signature(s.set_entry_status).parameters)[:2] == ["entry_id", "status"]
    assert s.get_log.__doc__ == a.get_log.__doc__ is not None
    s.close()
    anyio.run(a.aclose)


BLOCKER = """
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"starlette", "redis", "uvicorn", "hiredis", "structlog"}:
            raise ImportError(f"{name} is blocked: the SDK must not need it")
        return None

sys.meta_path.insert(0, Blocked())
"""


def test_the_sdk_imports_without_the_server_dependencies(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    check = (
        "import sys, orchestrator_sdk, orchestrator_sdk.cli\n"
        "orchestrator_sdk.Client('http://127.0.0.1:1', 'ws').close()\n"
        "try:\n    import starlette\nexcept ImportError:\n    pass\n"
        "else:\n    raise SystemExit('the blocker does not work')\n"
        "loaded = {m.partition('.')[0] for m in sys.modules}\n"
        "assert not loaded & {'starlette', 'redis', 'uvicorn', 'api'}, loaded\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
    # The command line too, through its own entry point.
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator_sdk", "todo", "--help"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "--workspace" in done.stdout


# Every operation, live: one scenario, run by each client


async def scenario(do: Do) -> None:
    """Every operation of the contract once at least (checked against it by the caller)."""
    assert (await do("healthz")) == {"status": "ok"}
    assert (await do("readyz"))["status"] == "ready"
    assert "orch_http_requests_total" in await do("metrics")

    assert await do("update_config", {"executor": {"max_workers": 2}, "x": 1}) == {
        "executor": {"max_workers": 2},
        "x": 1,
    }
    assert await do("get_config") == {"executor": {"max_workers": 2}, "x": 1}

    call = {"tool": "fs.read", "sessionID": "s1", "agentName": "builder", "status": "ok"}
    one = await do("record_tool_calls", call)
    assert isinstance(one, r.Recorded)
    batch = await do("record_tool_calls", [{**call, "tool": "fs.write"}, {**call, "title": "t"}])
    assert len(batch.items) == 2
    page = await do("get_log", tool="fs.read", session_id="s1", order="desc", limit=10)
    assert isinstance(page, r.LogPage)
    assert [c.tool for c in page.items] == ["fs.read", "fs.read"]
    assert page.meta.total == 2
    assert (await do("get_events_connections")).count == 0

    item = QuestionItem(
        question="Which framework?",
        header="Tests",
        options=[QuestionOption("pytest"), QuestionOption("unittest")],
    )
    asked = await do("questions_raise", "s1", [item], ToolRef("m1", "c1"))
    raw_item = {"question": "Go?", "header": "Go", "options": [], "custom": True}
    other = await do(
        "questions_raise",
        "s2",
        [raw_item],
        {"messageID": "m2", "callID": "c2"},
        expires_in_ms=9_000,
    )
    listed = await do("questions_list")
    assert [q.id for q in listed.questions] == [asked.question.id, other.question.id]
    detail = await do("questions_get_detail", asked.question.id)
    assert detail.question == asked.question
    assert (await do("questions_answer", asked.question.id, [["pytest"]])).answered
    assert (await do("questions_reject", other.question.id, reason="not now")).rejected

    todo = await do("update_todo", "a test project")
    assert isinstance(todo, r.TodoDocument)
    assert todo.project_context == "a test project"
    phase = (await do("create_phase", "Build", phase_id="phs_b", status="active")).phase
    assert (await do("get_phase", "phs_b")).phase == phase
    assert [p.id for p in (await do("list_phases")).phases] == ["phs_b"]
    changed = await do(
        "update_phase", "phs_b", description="the build", phase_rounds=2, container_id="ctr_1"
    )
    assert (changed.phase.description, changed.phase.container_id) == ("the build", "ctr_1")
    ship = (await do("create_phase", "Ship", phase_id="phs_s", seq=4)).phase
    assert (phase.seq, ship.seq, ship.container_id) == (0, 4, None)
    added = await do(
        "add_phase_memory", "phs_b", ["a note", {"text": "another", "sessionID": "s1"}]
    )
    assert added.count == 2
    assert [n.text for n in (await do("get_phase_memory", "phs_b")).notes] == ["a note", "another"]
    prompted = await do("prompt_phase", "phs_b", "go on", session_id="s1")
    assert prompted.prompt.sessionID == "s1"
    assert (await do("prompt_session", "s2", "hello", phase_id="phs_b")).prompt.phaseID == "phs_b"

    created = await do(
        "create_entries",
        [
            {
                "id": "e1",
                "content": "first",
                "files": ["a.py"],
                "spec": {"acceptance_criteria": ["works"]},
            },
            {"id": "e2", "content": "second", "depends_on": ["e1"]},
            {"id": "e3", "content": "in the phase", "phase_id": "phs_b"},
            {"id": "e4", "content": "to cancel", "priority": "low"},
        ],
    )
    assert [e.id for e in created.entries] == ["e1", "e2", "e3", "e4"]
    assert (await do("claim", "worker-0")) is None  # 204: nothing is dispatched yet
    plan = await do("get_todo")
    assert [(e.id, e.status) for e in plan.entries][:2] == [("e1", "pending"), ("e2", "pending")]
    assert [(p.id, p.seq) for p in plan.phases] == [("phs_b", 0), ("phs_s", 4)]
    assert (await do("get_entry", "e2")).entry.depends_on == ["e1"]
    assert (await do("set_entry_priority", "e1", "critical")).entry.priority == "critical"
    assert (await do("set_entry_rounds", "e1", 3)).entry.budget_rounds == 3
    assert (await do("set_entry_budget", "e1", 5.0, version=3)).entry.budget_usd == 5.0
    written = {"requirements": "do it", "acceptance_criteria": ["done"], "authored_by": "sdk"}
    spec = await do("put_entry_spec", "e3", written)
    assert spec.entry.spec.acceptance_criteria == ["done"]
    assert (spec.entry.spec.authored_by, spec.entry.spec.revision) == ("sdk", 1)
    got_spec = await do("get_entry_spec", "e3")
    assert isinstance(got_spec, r.SpecBody)
    assert (got_spec.spec.requirements, got_spec.frozen) == ("do it", False)
    assert (await do("freeze_entry_spec", "e3")).entry.spec_frozen
    assert (await do("lock_entry_budget", "e1")).entry.budget_locked
    events = await do("get_todo_events", since_seq=0, limit=5)
    assert len(events.events) == 5
    assert all(e.type.startswith("todo.") for e in events.events)
    cancelled = await do("set_entry_status", "e4", "cancelled", reason="not needed")
    assert cancelled.entry.status == "cancelled"
    assert (await do("delete_entry", "e4")).deleted

    caps = await do("update_budget", {"cap_usd": 100, "max_tokens": None})
    assert caps.budget.caps.cap_usd == 100
    assert isinstance(await do("get_budget"), r.BudgetBody)
    assert (await do("start_executor")).started
    assert (await do("pause_executor")).paused
    assert (await do("resume_executor")).resumed
    status = await do("get_executor_status")
    assert status.executor.status == "running"
    cycle = await do("force_dispatch")
    assert isinstance(cycle, r.Cycle)
    claimed = await do("claim", "worker-1")
    while claimed is None:  # the dispatcher may be mid-cycle: force one more
        await do("force_dispatch")
        claimed = await do("claim", "worker-1")
    assert isinstance(claimed, r.Claimed)
    lease = claimed.lease
    assert [w.id for w in (await do("list_workers")).workers] == [lease.id]
    if claimed.entry.files:
        assert [lock.file for lock in (await do("list_locks")).locks] == claimed.entry.files
    assert (await do("heartbeat", lease.id)).lease.expires_at >= lease.expires_at
    usage = await do("report_usage", "worker-1", entry_id=lease.entryID, cost_usd=0.5, tokens=10)
    assert usage.usage.tokens == 10
    report = [{"criterion": "works", "passed": True}]
    done = await do("complete_lease", lease.id, summary="done", report=report)
    assert done.entry.status == "completed"
    second = await do("claim", "worker-2")
    while second is None:
        await do("force_dispatch")
        second = await do("claim", "worker-2")
    failed = await do("fail_lease", second.lease.id, reason="flaky", retry=False)
    assert failed.entry.status == "failed"
    assert (await do("stop_all")).stopped
    verified = await do("verify_phase", "phs_b")
    assert isinstance(verified, r.Verified)
    assert verified.results[0].entryID == "e3"
    sessions = {s.id for s in (await do("list_sessions")).sessions}
    assert {"s1", "s2", "worker-1", "worker-2"} <= sessions

    document = await do("export_todo")
    assert isinstance(document, PlanDocument)
    assert "PlanDocument" in (await do("get_document_schema"))["$defs"]
    synced = await do("sync_vault")
    assert synced.created
    assert [s.id for s in (await do("list_snapshots")).snapshots] == [synced.snapshot.id]
    snapshot = await do("get_snapshot", synced.snapshot.id)
    assert snapshot.document == document
    assert "second" in await do("get_snapshot_markdown", synced.snapshot.id)
    markdown = await do("export_todo_markdown")
    accepted = await do("start_import", document=markdown)
    job = await do("get_import", accepted.importJobID)
    while job.status == "running":
        job = await do("get_import", accepted.importJobID)
    assert isinstance(job, ImportJob)
    assert job.status == "completed", job

    dump = await do("get_debug_dump")
    assert dump["config"] == {"executor": {"max_workers": 2}, "x": 1}
    last = dump["log"]["last_seq"]
    seen = await do("read_stream", "stream_events", last)
    assert [e.seq for e in seen] == list(range(1, last + 1))
    assert isinstance(seen[0].decode(), ConfigUpdated)
    calls = await do("read_stream", "stream_log", 3)
    assert [c.call.tool for c in calls] == ["fs.read", "fs.write", "fs.read"]

    purged = await do("purge")
    assert "events" in purged.purged


async def collect_async(client: AsyncClient, name: str, count: int) -> list[Any]:
    items: list[Any] = []
    async with getattr(client, name)(since_seq=0) as stream:
        async for item in stream:
            items.append(item)
            if len(items) == count:
                return items
    return items


def collect(client: Client, name: str, count: int) -> list[Any]:
    items: list[Any] = []
    with getattr(client, name)(since_seq=0) as stream:
        for item in stream:
            items.append(item)
            if len(items) == count:
                return items
    return items


@pytest.mark.anyio
async def test_every_operation_with_the_async_client(server: ServerProcess, workspace: str) -> None:
    called: set[str] = set()
    async with AsyncClient(server.base_url, workspace) as client:

        async def do(name: str, *args: Any, **kwargs: Any) -> Any:
            if name == "read_stream":
                called.add(args[0])
                return await collect_async(client, *args)
            called.add(name)
            return await getattr(client, name)(*args, **kwargs)

        await scenario(do)
    assert called >= {op.id for op in OPERATIONS}


@pytest.mark.anyio
async def test_every_operation_with_the_sync_client(server: ServerProcess, workspace: str) -> None:
    called: set[str] = set()
    with Client(server.base_url, workspace) as client:

        async def do(name: str, *args: Any, **kwargs: Any) -> Any:
            if name == "read_stream":
                called.add(args[0])
                return collect(client, *args)
            called.add(name)
            return getattr(client, name)(*args, **kwargs)

        await scenario(do)
    assert called >= {op.id for op in OPERATIONS}


# Errors


@pytest.fixture
def client(server: ServerProcess, workspace: str) -> Iterator[Client]:
    with Client(server.base_url, workspace, retries=FAST) as made:
        yield made


def test_errors_are_typed_by_status_with_code_message_and_details(client: Client) -> None:
    with pytest.raises(NotFound) as missing:
        client.get_entry("e_nope")
    assert (missing.value.status, missing.value.code) == (404, "ENTRY_NOT_FOUND")
    assert missing.value.details == {"entryID": "e_nope"}
    assert "e_nope" in missing.value.message

    client.create_entries([{"id": "e1", "content": "x"}])
    with pytest.raises(Conflict) as illegal:
        client.set_entry_status("e1", "completed")
    assert illegal.value.code == "ILLEGAL_TRANSITION"
    assert (illegal.value.details["from"], illegal.value.details["to"]) == ("pending", "completed")
    with pytest.raises(BadRequest) as bad_id:
        client.get_entry("not an id!")
    assert bad_id.value.code == "INVALID_ID"
    with pytest.raises(Unprocessable) as invalid:
        client.create_entries([{"content": ""}])
    assert invalid.value.code == "VALIDATION_FAILED"
    assert isinstance(invalid.value, ApiError)


def test_a_server_requiring_tokens_answers_unauthorized(
    make_server: Callable[..., ServerProcess], workspace: str
) -> None:
    gated = make_server(ORCH_AUTH="required")
    with Client(gated.base_url, workspace, token="orch_unknown") as client:
        with pytest.raises(Unauthorized) as refused:
            client.get_config()
        assert refused.value.code == "UNAUTHENTICATED"
        assert client.healthz() == {"status": "ok"}  # the probes need no token
        with pytest.raises(Unauthorized), client.stream_events() as stream:
            next(stream)


def test_a_server_that_is_not_there_is_unreachable() -> None:
    with Client("http://127.0.0.1:9", "ws", retries=FAST) as client:
        started = time.monotonic()
        with pytest.raises(Unreachable) as failed:
            client.get_config()
        assert "127.0.0.1:9" in str(failed.value)
        assert time.monotonic() - started < 5


# Idempotency and retries


class Flaky(httpx.HTTPTransport):
    """Forwards to the real server, but answers the first ``fail`` tries of a write as
    told: a 503, or the server's answer lost (it applied the write; the client never knew)."""

    def __init__(self, how: str, fail: int = 1) -> None:
        super().__init__()
        self.how, self.fail = how, fail
        self.keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return super().handle_request(request)
        self.keys.append(request.headers.get("idempotency-key"))
        if len(self.keys) <= self.fail and self.how == "503":
            return httpx.Response(503, headers={"Retry-After": "0"}, json=UNAVAILABLE)
        response = super().handle_request(request)
        if len(self.keys) <= self.fail:
            response.read()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response


class AsyncFlaky(httpx.AsyncHTTPTransport):
    def __init__(self, how: str, fail: int = 1) -> None:
        super().__init__()
        self.how, self.fail = how, fail
        self.keys: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return await super().handle_async_request(request)
        self.keys.append(request.headers.get("idempotency-key"))
        if len(self.keys) <= self.fail and self.how == "503":
            return httpx.Response(503, headers={"Retry-After": "0"}, json=UNAVAILABLE)
        response = await super().handle_async_request(request)
        if len(self.keys) <= self.fail:
            await response.aread()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response


UNAVAILABLE = {"error": {"code": "UNAVAILABLE", "message": "Redis unavailable", "details": {}}}


@pytest.mark.parametrize("how", ["lost", "503"])
def test_a_retried_write_reuses_its_generated_key_and_applies_once(
    server: ServerProcess, workspace: str, how: str
) -> None:
    flaky = Flaky(how)
    with Client(server.base_url, workspace, retries=FAST, transport=flaky) as client:
        created = client.create_entries([{"content": "once"}])
        assert len(flaky.keys) == 2
        assert flaky.keys[0] == flaky.keys[1] is not None
        assert [e.id for e in client.get_todo().entries] == [created.entries[0].id]
        client.create_entries([{"content": "once"}])  # a new call: a new key, a new entry
        assert len(flaky.keys) == 3
        assert flaky.keys[2] != flaky.keys[0]
        assert len(client.get_todo().entries) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["lost", "503"])
async def test_the_async_client_retries_a_write_with_the_same_key(
    server: ServerProcess, workspace: str, how: str
) -> None:
    flaky = AsyncFlaky(how)
    async with AsyncClient(server.base_url, workspace, retries=FAST, transport=flaky) as client:
        recorded = await client.record_tool_calls(
            {"tool": "t", "sessionID": "s", "agentName": "a", "status": "ok"}
        )
        assert flaky.keys[0] == flaky.keys[1] is not None
        assert (await client.get_log()).meta.total == 1
        assert recorded.items[0].seq == 1


def test_a_given_key_returns_the_first_result_and_appends_nothing(client: Client) -> None:
    first = client.create_entries([{"content": "x"}], idempotency_key="k-1")
    again = client.create_entries([{"content": "x"}], idempotency_key="k-1")
    assert again == first
    assert len(client.get_todo().entries) == 1
    with pytest.raises(Unprocessable) as reused:
        client.create_entries([{"content": "y"}], idempotency_key="k-1")
    assert reused.value.code == "IDEMPOTENCY_KEY_REUSED"


def test_without_generated_keys_a_write_is_not_retried_once_sent(
    server: ServerProcess, workspace: str
) -> None:
    flaky = Flaky("lost")
    with Client(
        server.base_url, workspace, retries=FAST, transport=flaky, idempotency_keys=False
    ) as client:
        with pytest.raises(Unreachable):
            client.create_entries([{"content": "x"}])
        assert flaky.keys == [None]
        assert len(client.get_todo().entries) == 1  # it was applied; a retry would duplicate


def test_503_is_retried_then_raised(server: ServerProcess, workspace: str) -> None:
    flaky = Flaky("503", fail=10)
    with Client(server.base_url, workspace, retries=FAST, transport=flaky) as client:
        with pytest.raises(ServiceUnavailable) as failed:
            client.purge()
        assert failed.value.code == "UNAVAILABLE"
        assert failed.value.retry_after == 0
        assert len(flaky.keys) == 1 + FAST.attempts
        assert len(set(flaky.keys)) == 1


# Streams: reset, live start


def test_a_stream_from_a_purged_past_starts_with_a_reset(client: Client) -> None:
    client.update_config({"a": 1})
    client.update_config({"a": 2})
    client.purge()
    client.update_config({"a": 3})
    with client.stream_events(since_seq=0) as stream:
        reset, purged, updated = next(stream), next(stream), next(stream)
    assert isinstance(reset, Reset)
    assert (reset.reason, reset.since_seq, reset.seq, reset.first_seq) == ("trimmed", 0, 2, 3)
    assert isinstance(purged, Event)
    assert isinstance(updated, Event)
    assert (purged.seq, purged.type) == (3, "orchestration.purged")
    assert (updated.seq, updated.payload) == (4, {"patch": {"a": 3}})
    with client.stream_events(since_seq=1000) as ahead:
        client.update_config({"a": 4})
        first, event = next(ahead), next(ahead)
    assert isinstance(first, Reset)
    assert (first.reason, first.seq, first.last_seq) == ("ahead", 4, 4)
    assert isinstance(event, Event)
    assert event.seq == 5


@pytest.mark.anyio
async def test_a_live_stream_delivers_what_follows_connect_and_no_reset(
    server: ServerProcess, workspace: str
) -> None:
    async with AsyncClient(server.base_url, workspace) as client:
        await client.update_config({"before": True})
        async with client.stream_events() as events, client.stream_log() as calls:
            assert events.last_seq == calls.last_seq == 1  # known before the first event
            await client.update_config({"after": True})
            await client.record_tool_calls(
                {"tool": "t", "sessionID": "s", "agentName": "a", "status": "ok"}
            )
            first = await anext(events)
            call = await anext(calls)
        assert isinstance(first, Event)
        assert (first.seq, first.type) == (2, "config.updated")
        assert isinstance(call, LoggedCall)
        assert (call.seq, call.call.tool) == (3, "t")


# Streams: resumption across a server restart


@pytest.fixture
def other(server: ServerProcess) -> ServerProcess:
    """Another replica on the same Redis: it takes the writes while the one restarted is down."""
    return server


def write_config(url: str, workspace: str, values: range) -> None:
    with Client(url, workspace) as writer:
        for n in values:
            writer.update_config({"n": n})


@pytest.mark.anyio
async def test_a_stream_resumes_across_a_graceful_restart_with_no_gap_or_duplicate(
    make_server: Callable[..., ServerProcess], other: ServerProcess, workspace: str
) -> None:
    server = make_server(ORCH_SSE_RETRY_MS="100")
    write_config(server.base_url, workspace, range(1, 11))
    seqs: list[int] = []
    client = AsyncClient(server.base_url, workspace)
    async with client, client.stream_events(since_seq=0) as stream:
        async for item in stream:
            assert isinstance(item, Event)
            seqs.append(item.seq)
            if item.seq == 5:
                # Down (a reconnect frame, then connection refused), written to, back.
                await to_thread(server.stop)
                await to_thread(write_config, other.base_url, workspace, range(11, 21))
                await to_thread(server.start)
                await to_thread(write_config, server.base_url, workspace, range(21, 31))
            if item.seq == 30:
                break
        assert stream.reconnects >= 1
    assert seqs == list(range(1, 31))


def test_a_log_stream_resumes_across_a_killed_server_with_no_gap_or_duplicate(
    make_server: Callable[..., ServerProcess], other: ServerProcess, workspace: str
) -> None:
    server = make_server(ORCH_SSE_RETRY_MS="100")
    call: ToolCallInput = {"tool": "t", "sessionID": "s", "agentName": "a", "status": "ok"}
    with Client(server.base_url, workspace) as client, Client(other.base_url, workspace) as side:
        for n in range(5):  # tool calls between other events: the log stream's seqs skip
            client.record_tool_calls({**call, "title": f"{n}"})
            client.update_config({"n": n})
        titles: list[str] = []
        with client.stream_log(since_seq=0) as stream:
            for item in stream:
                assert isinstance(item, LoggedCall)
                titles.append(item.call.title or "")
                if item.call.title == "2":
                    server.kill()  # no reconnect frame: the connection just breaks
                    for n in range(5, 10):
                        side.record_tool_calls({**call, "title": f"{n}"})
                        side.update_config({"n": n})
                    restart = threading.Timer(0.3, server.start)
                    restart.start()
                if item.call.title == "9":
                    break
            restart.join()
            assert stream.reconnects >= 1
            assert stream.last_seq == 19
    assert titles == [f"{n}" for n in range(10)]


async def to_thread(function: Callable[..., Any], *args: Any) -> Any:
    return await anyio.to_thread.run_sync(lambda: function(*args))


@pytest.fixture
async def async_client(server: ServerProcess, workspace: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.base_url, workspace, retries=FAST) as made:
        yield made


@pytest.mark.anyio
async def test_async_errors_are_typed_too(async_client: AsyncClient) -> None:
    with pytest.raises(NotFound) as missing:
        await async_client.questions_get_detail("que_nope")
    assert missing.value.code == "QUESTION_NOT_FOUND"
    with pytest.raises(NotFound) as phase:
        await async_client.get_phase("phs_nope")
    assert phase.value.details == {"phaseID": "phs_nope"}


# Streams: the resumption logic, on scripted connections


def frame(seq: int, type_: str = "config.updated", payload: str = "{}") -> bytes:
    data = f'{{"seq":{seq},"type":"{type_}","payload":{payload}}}'
    return f"id: {seq}\nevent: {type_}\ndata: {data}\n\n".encode()


def control(seq: int, name: str, payload: str) -> bytes:
    data = f'{{"seq":{seq},"type":"{name}","payload":{payload}}}'
    return f"id: {seq}\nevent: {name}\ndata: {data}\n\n".encode()


class Script:
    """A server that answers each connection with the next body of the script, and records
    the ``Last-Event-ID`` each asked with and when."""

    def __init__(self, *bodies: bytes | int) -> None:
        self.bodies = list(bodies)
        self.asked: list[tuple[str | None, float]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked.append((request.headers.get("last-event-id"), time.monotonic()))
        body = self.bodies.pop(0) if self.bodies else 503
        if isinstance(body, int):
            return httpx.Response(body, json=UNAVAILABLE)
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


SCRIPT = (
    # A slow consumer is cut off: the reconnect frame says where to resume, at once.
    b"retry: 50\n\n" + frame(1) + frame(2) + b": keep-alive\n\n"
    b'id: 2\nevent: reconnect\ndata: {"seq":2,"type":"reconnect","payload":'
    b'{"reason":"slow_consumer","last_seq":2}}\n\n',
    # The replay overlaps what was delivered; the body then ends mid-frame (a broken
    # connection): the cut-off frame is dropped, and the next connection waits `retry:`.
    frame(2) + frame(3) + frame(4)[:-5],
    503,  # a failed connection: waits twice as long
    control(5, "reset", '{"since_seq":4,"first_seq":6,"last_seq":6,"reason":"trimmed"}') + frame(6),
)


def check_script(script: Script, items: list[Event | Reset], elapsed: list[float]) -> None:
    assert [(type(i).__name__, i.seq) for i in items] == [
        ("Event", 1),
        ("Event", 2),
        ("Event", 3),
        ("Reset", 5),
        ("Event", 6),
    ]
    assert [asked for asked, _ in script.asked] == ["0", "2", "3", "3"]
    # Immediately after the reconnect frame; then retry: 50 ms, then twice that.
    assert elapsed[0] < 0.045
    assert 0.05 <= elapsed[1] < 0.5
    assert 0.1 <= elapsed[2] < 0.6


def gaps(script: Script) -> list[float]:
    times = [at for _, at in script.asked]
    return [b - a for a, b in itertools.pairwise(times)]


def test_the_sync_stream_resumes_dedupes_and_honours_retry() -> None:
    script = Script(*SCRIPT)
    client = Client("http://sse", "ws", transport=httpx.MockTransport(script))
    with client, client.stream_events(since_seq=0) as stream:
        items = [item for _, item in zip(range(5), stream, strict=False)]
        assert stream.last_seq == 6
        assert stream.reconnects == 3
    check_script(script, items, gaps(script))


@pytest.mark.anyio
async def test_the_async_stream_resumes_dedupes_and_honours_retry() -> None:
    script = Script(*SCRIPT)
    client = AsyncClient("http://sse", "ws", transport=httpx.MockTransport(script))
    items: list[Event | Reset] = []
    async with client, client.stream_events(since_seq=0) as stream:
        async for item in stream:
            items.append(item)
            if len(items) == 5:
                break
    check_script(script, items, gaps(script))


def test_a_stream_gives_up_after_max_retries() -> None:
    script = Script(b"retry: 1\n\n" + frame(1), 503, 503)
    client = Client("http://sse", "ws", transport=httpx.MockTransport(script), stream_max_retries=1)
    with client, client.stream_events(since_seq=0) as stream:
        assert next(stream).seq == 1
        with pytest.raises(ServiceUnavailable):
            next(stream)
    assert [asked for asked, _ in script.asked] == ["0", "1"]  # lost, then one retry
