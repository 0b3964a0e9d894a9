"""``orchestrator demo``: simulated worker sessions drive a small plan through a running
server, and say on stdout what happens.

The demo is a client like any other: it purges its workspace, sets budget caps, creates two
phases and five entries, starts the executor, and runs three worker sessions that claim
entries, heartbeat, log tool calls and report spend. One worker asks a question and waits
for the answer; one entry overruns its locked budget and is blocked. A coordinator answers
the question when nobody else does, verifies each phase once its entries are settled, and
cancels what the budget blocked. The server's own doings are read back from ``/events``.
"""

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from anyio.abc import TaskStatus

from orchestrator_sdk.cli import (
    API_ERROR,
    UNREACHABLE,
    Subcommands,
    fail,
    positive,
    workspace_id,
)

DESIGN, BUILD = "phs_demo_design", "phs_demo_build"
SCHEMA, API, HANDLERS, TESTS, REFACTOR = (
    "entry_demo_schema",
    "entry_demo_api",
    "entry_demo_handlers",
    "entry_demo_tests",
    "entry_demo_refactor",
)
WORKERS = ("worker-1", "worker-2", "worker-3")
COORDINATOR = "orchestrator-demo"
ANSWER_AFTER_S = 3.0  # the demo answers a question itself after this long (at speed 1)
SETTLED = frozenset({"completed", "cancelled", "failed", "blocked"})

PHASES: list[dict[str, Any]] = [
    {"id": DESIGN, "name": "Design", "seq": 0, "status": "active", "session_id": COORDINATOR},
    {
        "id": BUILD,
        "name": "Build",
        "seq": 1,
        "phase_rounds": 3,
        "container_id": "ctr_demo_build",
        "session_id": COORDINATOR,
    },
]


def _entry(entry_id: str, content: str, phase: str, files: list[str], **more: Any) -> Any:
    acceptance = more.pop("acceptance", [f"{content.lower()}: done"])
    spec = {
        "requirements": content,
        "acceptance_criteria": acceptance,
        "authored_by": COORDINATOR,
        **more.pop("spec", {}),
    }
    return {
        "id": entry_id,
        "content": content,
        "phase_id": phase,
        "files": files,
        "spec": spec,
        "created_by": COORDINATOR,
        **more,
    }


ENTRIES: list[dict[str, Any]] = [
    _entry(SCHEMA, "Design the schema", DESIGN, ["db/schema.sql"], priority="high"),
    _entry(API, "Sketch the REST API", DESIGN, ["docs/api.md"], depends_on=[SCHEMA]),
    _entry(
        HANDLERS,
        "Implement the handlers",
        BUILD,
        ["app/handlers.py"],
        depends_on=[API],
        # The files its spec names are locked with the entry's own.
        spec={"files_to_create": ["app/errors.py"], "files_to_modify": ["app/routes.py"]},
    ),
    _entry(TESTS, "Write the tests", BUILD, ["tests/test_handlers.py"], depends_on=[API]),
    _entry(
        REFACTOR,
        "Refactor the legacy module",
        BUILD,
        ["app/legacy.py"],
        budget_usd=0.4,
        priority="low",
    ),
]

# What a worker does on each entry: ("call", tool, target) | ("spend", usd, tokens) | ("ask",)
Step = tuple[Any, ...]
SCRIPTS: dict[str, list[Step]] = {
    SCHEMA: [("call", "read", "docs/brief.md"), ("spend", 0.08, 1_900), ("call", "edit", "")],
    API: [("call", "read", "db/schema.sql"), ("call", "edit", ""), ("spend", 0.11, 2_400)],
    HANDLERS: [("call", "edit", ""), ("call", "bash", "pytest -q"), ("spend", 0.21, 4_800)],
    TESTS: [
        ("call", "read", "app/handlers.py"),
        ("ask",),
        ("call", "edit", ""),
        ("spend", 0.09, 2_000),
    ],
    REFACTOR: [
        ("call", "read", ""),
        ("spend", 0.18, 3_900),
        ("call", "edit", ""),
        ("spend", 0.17, 3_700),
        ("call", "edit", ""),
        ("spend", 0.16, 3_500),  # $0.51 of its $0.40: blocked
    ],
}
ANSWER = {"answers": [["pytest"]]}
QUESTION = {
    "question": "Which test framework should the new tests use?",
    "header": "Tests",
    "options": [
        {"label": "pytest", "description": "what the repository already uses"},
        {"label": "unittest", "description": "the standard library's"},
    ],
}


class DemoFailed(Exception):
    """The server answered something the demo cannot go on from."""


@dataclass
class Demo:
    """One run: the server's workspace, the pace, and what has been seen so far."""

    client: httpx.AsyncClient
    base: str  # the workspace's orchestration URL
    speed: float
    interactive: bool
    token: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: anyio.Event = field(default_factory=anyio.Event)
    asked: dict[str, float] = field(default_factory=dict)  # question id -> first seen
    events: int = 0

    def curl(self, method: str, path: str, body: Any = None) -> str:
        """The curl command for a request to the workspace (the token as a variable)."""
        parts = ["curl", "-N" if method == "GET" else f"-X {method}", f"'{self.base}{path}'"]
        if self.token:
            parts.append('-H "Authorization: Bearer $ORCH_TOKEN"')
        if body is not None:
            parts.append(f"-H 'content-type: application/json' -d '{json.dumps(body)}'")
        return " ".join(parts)

    def say(self, who: str, text: str) -> None:
        print(f"{time.monotonic() - self.started:6.1f}s  {who:<11} {text}", flush=True)

    async def pause(self, seconds: float) -> None:
        await anyio.sleep(seconds / self.speed)

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The status and JSON answer (None when empty) of a request to the workspace."""
        response = await self.client.request(method, self.base + path, json=body)
        return response.status_code, response.json() if response.content else None

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer of a request that must succeed (None for a 204)."""
        status, answer = await self.request(method, path, body)
        if status >= 300:
            raise DemoFailed(f"{method} {path}: {status} {answer}")
        return answer


# Setting up


async def set_up(demo: Demo) -> None:
    await demo.call("POST", "/purge")
    demo.say("setup", "purged the workspace: a clean slate")
    await demo.call("PATCH", "/budget", {"cap_usd": 5.0, "max_workers": 3})
    demo.say("setup", "budget caps: $5.00 in all, at most 3 workers at once")
    for phase in PHASES:
        await demo.call("POST", "/phases", phase)
    demo.say("setup", 'phases "Design" (active) then "Build" (pending)')
    await demo.call("POST", "/todo/entries", {"entries": ENTRIES})
    for entry in ENTRIES:
        after = f", after {', '.join(entry['depends_on'])}" if entry.get("depends_on") else ""
        demo.say("setup", f"entry {entry['id']}: {entry['content']} ({entry['files'][0]}{after})")
    await demo.call("POST", f"/todo/entries/{REFACTOR}/budget/lock")
    demo.say("setup", f"{REFACTOR} gets $0.40, locked: it cannot be topped up")
    await demo.call("POST", "/executor/start")
    demo.say("executor", "started: the server dispatches entries whose turn has come")


# Workers


async def work(demo: Demo, session: str) -> None:
    """Claim entries and work through their scripts until the demo is over."""
    while not demo.finished.is_set():
        claimed = await demo.call("POST", "/executor/claim", {"sessionID": session})
        if claimed is None:
            await demo.pause(0.25)
            continue
        entry, lease = claimed["entry"], claimed["lease"]["id"]
        spec = entry["spec"]
        locked = sorted({*entry["files"], *spec["files_to_create"], *spec["files_to_modify"]})
        demo.say(session, f"claimed {entry['id']} ({entry['content']}), locking {locked}")
        if await run_script(demo, session, entry, lease):
            report = [
                {"criterion": c, "passed": True, "evidence": "checked by the worker"}
                for c in entry["spec"]["acceptance_criteria"]
            ]
            body = {"summary": f"{entry['content']}: done", "report": report}
            await demo.call("POST", f"/executor/leases/{lease}/complete", body)
            demo.say(session, f"completed {entry['id']}; its locks are released")


async def run_script(demo: Demo, session: str, entry: dict[str, Any], lease: str) -> bool:
    """Work on the entry; False when the lease was taken away (a budget tripped)."""
    for step in SCRIPTS.get(entry["id"], [("call", "edit", "")]):
        await demo.pause(0.6)
        status, beat = await demo.request("POST", f"/executor/leases/{lease}/heartbeat")
        if status != 200:
            demo.say(session, f"lost its lease on {entry['id']}: {beat['error']['message']}")
            return False
        match step:
            case ("call", tool, target):
                await tool_call(demo, session, entry, tool, target or entry["files"][0])
            case ("spend", usd, tokens):
                if not await spend(demo, session, entry["id"], usd, tokens):
                    return False
            case ("ask",):
                await ask(demo, session, lease)
    return True


async def tool_call(
    demo: Demo, session: str, entry: dict[str, Any], tool: str, target: str
) -> None:
    call = {
        "tool": tool,
        "sessionID": session,
        "agentName": session,
        "status": "ok",
        "entryID": entry["id"],
        "title": f"{tool} {target}",
        "target": target,
        "duration": 120,
    }
    await demo.call("POST", "/log", call)
    demo.say(session, f"tool call: {tool} {target}")


async def spend(demo: Demo, session: str, entry_id: str, usd: float, tokens: int) -> bool:
    """Report usage; False when it blocked the entry (its budget is spent)."""
    body = {"sessionID": session, "entryID": entry_id, "cost_usd": usd, "tokens": tokens}
    await demo.call("POST", "/usage", body)
    entry = (await demo.call("GET", f"/todo/entries/{entry_id}"))["entry"]
    budget = f" of ${entry['budget_usd']:.2f}" if entry["budget_usd"] is not None else ""
    demo.say(session, f"spent ${usd:.2f} ({tokens:,} tokens): ${entry['spent_usd']:.2f}{budget}")
    if entry["status"] == "blocked":
        demo.say(session, f"{entry_id}'s budget tripped: entry blocked, lease revoked")
        return False
    return True


async def ask(demo: Demo, session: str, lease: str) -> None:
    """Raise a question and wait, heartbeating, until it is no longer pending."""
    body = {
        "sessionID": session,
        "questions": [QUESTION],
        "tool": {"messageID": f"msg_{session}", "callID": f"call_{session}_ask"},
    }
    question = (await demo.call("POST", "/questions", body))["question"]
    demo.say(session, f'asks "{QUESTION["question"]}" and waits (entry: awaiting_input)')
    beat = time.monotonic()
    while (await demo.request("GET", f"/questions/{question['id']}"))[0] == 200:
        await anyio.sleep(0.1)
        if time.monotonic() - beat > 1.0:
            await demo.call("POST", f"/executor/leases/{lease}/heartbeat")
            beat = time.monotonic()
    demo.say(session, "has its answer; back to work (entry: in_progress)")


# The coordinator: answers questions nobody answers, verifies phases, settles blocked work


async def coordinate(demo: Demo) -> None:
    while True:
        await answer_questions(demo)
        todo = await demo.call("GET", "/todo")
        if all(p["status"] == "completed" for p in todo["phases"]):
            demo.finished.set()
            return
        for phase in todo["phases"]:
            mine = [e for e in todo["entries"] if e["phase_id"] == phase["id"]]
            if phase["status"] == "active" and all(e["status"] in SETTLED for e in mine):
                await verify(demo, phase, mine)
        await demo.pause(0.3)


async def answer_questions(demo: Demo) -> None:
    wait = ANSWER_AFTER_S / demo.speed
    for question in (await demo.call("GET", "/questions"))["questions"]:
        path = f"/questions/{question['id']}/answer"
        if question["id"] not in demo.asked:
            demo.asked[question["id"]] = time.monotonic()
            when = "" if demo.interactive else f" within {wait:.1f}s"
            demo.say("demo", f"answer it yourself{when}: {demo.curl('POST', path, ANSWER)}")
        if demo.interactive or time.monotonic() - demo.asked[question["id"]] < wait:
            continue
        status, _ = await demo.request("POST", path, ANSWER)
        if status == 200:  # else answered meanwhile, by someone else
            demo.say("demo", f'nobody answered in {wait:.1f}s: the demo answers "pytest" itself')


async def verify(demo: Demo, phase: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    result = await demo.call("POST", f"/phases/{phase['id']}/verify")
    if result["passed"]:
        demo.say("coordinator", f'verified "{phase["name"]}": PASS, phase completed')
        return
    failing = [r for r in result["results"] if r["result"] == "FAIL"]
    why = "; ".join(f"{r['entryID']}: {', '.join(r['reasons'])}" for r in failing)
    demo.say("coordinator", f'verified "{phase["name"]}": FAIL ({why})')
    for entry in entries:
        path = f"/todo/entries/{entry['id']}/status"
        if entry["status"] == "blocked":
            body = {"status": "cancelled", "reason": "over its locked budget"}
            await demo.call("PATCH", path, body)
            demo.say("operator", f"cancels {entry['id']}: over its locked budget")
        elif entry["status"] == "failed":
            await demo.call("PATCH", path, {"status": "pending", "reason": "try again"})
            demo.say("operator", f"puts {entry['id']} back to pending: try again")


# What the server did, as /events tells it

NOTABLE = {
    "todo.dispatched",
    "todo.status_changed",
    "budget.exceeded",
    "phase.status_changed",
    "lease.expired",
    "executor.paused",
    "question.answered",
}


def describe(event: dict[str, Any]) -> str:
    kind: str = event["type"]
    p = event["payload"]
    match kind:
        case "todo.dispatched":
            return f"{kind} {p['entryID']}: ready for a worker"
        case "todo.status_changed" | "phase.status_changed":
            return f"{kind} {p.get('entryID') or p.get('phaseID')}: {p['from']} -> {p['to']}"
        case "budget.exceeded":
            what = p.get("entryID") or "the workspace"
            return f"{kind} {what}: {p['cap']} {p['limit']:g}, spent {p['spent']:g}"
        case "question.answered":
            return f"{kind} {p['id']}: {p['answers']}"
    return kind


async def tail_events(
    demo: Demo, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Print the notable events of the workspace as the server emits them."""
    timeout = httpx.Timeout(10, read=None)
    async with demo.client.stream("GET", demo.base + "/events", timeout=timeout) as response:
        if response.status_code != 200:
            raise DemoFailed(f"GET /events: {response.status_code}")
        task_status.started()
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                demo.events += 1
                if event["type"] in NOTABLE:
                    demo.say("events", f"#{event['seq']} {describe(event)}")


# The whole run


async def wrap_up(demo: Demo) -> None:
    await demo.call("POST", "/executor/pause")
    todo = await demo.call("GET", "/todo")
    usage = (await demo.call("GET", "/budget"))["budget"]["usage"]
    calls = (await demo.call("GET", "/log?limit=1"))["meta"]["total"]
    counts: dict[str, int] = {}
    for entry in todo["entries"]:
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    settled = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    demo.say("executor", "paused: nothing left to dispatch")
    demo.say("done", f"entries: {settled}; phases: all completed")
    spent = f"${usage['cost_usd']:.2f}, {usage['tokens']:,} tokens"
    demo.say("done", f"spent {spent}, {calls} tool calls, {demo.events} events on /events")
    demo.say("done", f"replay every event: {demo.curl('GET', '/events?since_seq=0')}")


async def play(demo: Demo) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(tail_events, demo)
        await set_up(demo)
        for session in WORKERS:
            tg.start_soon(work, demo, session)
        await coordinate(demo)
        await wrap_up(demo)
        tg.cancel_scope.cancel()


def _root(exc: BaseException) -> BaseException:
    """The first exception inside task-group exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def run(url: str, workspace: str, speed: float, interactive: bool, token: str | None) -> int:
    base = f"{url.rstrip('/')}/api/v1/workspaces/{workspace}/orchestration"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:
        demo = Demo(client, base, speed, interactive, token)
        print(f"orchestrator demo: workspace {workspace} on {url}, speed {speed:g}")
        print(f"watch it live:  {demo.curl('GET', '/events')}\n", flush=True)
        deadline = None if interactive else 30 + 60 / speed
        try:
            with anyio.fail_after(deadline):
                await play(demo)
        except Exception as exc:
            problem = _root(exc)
            # One line on stderr, with the exit codes of every other command.
            if isinstance(problem, httpx.TransportError):
                fail(f"demo: cannot reach {url} ({problem}); is the server running (make run)?")
                return UNREACHABLE
            if isinstance(problem, DemoFailed | TimeoutError):
                fail(f"demo failed: {problem or 'it did not finish in time'}")
                return API_ERROR
            raise
    print(f"\ndemo finished in {time.monotonic() - demo.started:.1f}s")
    return 0


def add_command(commands: Subcommands) -> None:
    """``orchestrator demo``, on the CLI's subcommands."""
    d = commands.add_parser(
        "demo", help="drive simulated worker sessions through a small plan on a running server"
    )
    d.add_argument("--url", default="http://127.0.0.1:8000", help="the running server")
    d.add_argument(
        "--workspace", type=workspace_id, default="ws_demo", help="purged first, then played in"
    )
    d.add_argument("--speed", type=positive, default=1.0, help="2 runs twice as fast")
    d.add_argument("--interactive", action="store_true", help="wait for you to answer the question")
    d.add_argument(
        "--token", default=os.environ.get("ORCH_TOKEN"), help="API token (default: $ORCH_TOKEN)"
    )
    d.set_defaults(handler=command)


def command(args: argparse.Namespace, settings: object) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    return anyio.run(run, args.url, args.workspace, args.speed, args.interactive, args.token)
