"""Any sequence of commands keeps the domain's invariants: a hypothesis state machine over the
pure decisions (``decide_*``), folding their events into the plan as the service does.

A second test appends the events of generated command sequences to a real Redis and checks
that the plan read model equals the in-memory fold, before and after a rebuild.
"""

from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis
from ulid import ULID

from orchestrator import budget, executor, phases, todo, workers
from orchestrator.context import entities
from orchestrator.errors import OrchestrationError
from orchestrator.eventlog import EventLog
from orchestrator.events import (
    DOMAIN_TYPES,
    BudgetExceeded,
    EntryCreated,
    EntryDispatched,
    PlanDelta,
    Question,
    QuestionAnswered,
    QuestionItem,
    QuestionOption,
    StoredEvent,
    ToolCall,
    ToolRef,
    encode,
    new_event,
)
from orchestrator.executor import Limits, exceeded_caps, worker_slots
from orchestrator.model import (
    ACTIVE,
    PHASE_TRANSITIONS,
    PRIORITIES,
    TERMINAL,
    TRANSITIONS,
    Check,
    Entry,
    Plan,
)
from orchestrator.plan import Decision, evolve, fold, same_state
from orchestrator.questions import _entry_follows
from projections.plan import read_plan
from projections.runner import Projector

replace = msgspec.structs.replace

START = 1_700_000_000_000
LIMITS = Limits(default_workers=2, max_attempts=2, lease_ms=2_500, claim_ms=6_000)
FILES = ("src/a.py", "src/b.py", "src/c.py")
# A spec may name files too: they are locked with the entry's own.
SPECS = [
    None,
    todo.SpecDraft(acceptance_criteria=["tests pass"]),
    todo.SpecDraft(files_to_create=["src/c.py"]),
]
SESSIONS = ("s1", "s2", "s3")
STATUSES = tuple(TRANSITIONS)
MONEY = st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0])
BUDGETS = st.sampled_from([None, None, 0.0, 0.3, 0.5, 1.0])
CAP_VALUES: dict[str, list[Any]] = {
    "cap_usd": [None, 1.0, 100.0],
    "max_tokens": [None, 5_000, 1_000_000],
    "max_tool_calls": [None, 5, 100],
    "max_wall_ms": [None, 2_000, 1_000_000],
    "max_workers": [None, 0, 1, 2, 3],  # 0 is out of range: refused
    "max_gpus": [1],  # no such cap: refused
}
STEPS = 30
MACHINE_SETTINGS = settings(
    max_examples=150,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
MISSING = "gone_1"  # an id that names nothing


class PlanMachine(RuleBasedStateMachine):
    """State: the plan and the log so far. Each rule decides on the plan at a controllable
    clock; its events get the next seqs and are folded in with ``evolve``."""

    def __init__(self) -> None:
        super().__init__()
        self.plan = Plan()
        self.now = START
        self.log: list[StoredEvent] = []
        self.decisions: list[list[Any]] = []  # each decision's events, appended as one
        self.statuses: dict[str, list[str]] = {}  # entry -> statuses since its creation
        self.exceeded: dict[str, set[float]] = {}  # entry -> budget_usd reported exceeded
        self.deleted: list[str] = []
        self.questions: dict[str, Question] = {}  # asked and not settled
        self.counter = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # Running decisions

    def run(self, decide: Callable[[Plan], Decision], refusable: bool = True) -> Decision | None:
        """Decide and fold; a refused command (an OrchestrationError, or a value out of
        range) changes nothing."""
        before = encode(self.plan)
        try:
            decision = decide(self.plan)
        except (OrchestrationError, msgspec.ValidationError):
            if not refusable:
                raise
            decision = None
        assert encode(self.plan) == before, "a decision changed the plan it decided on"
        if decision is not None:
            self.commit(decision.events)
        return decision

    def commit(self, events: list[Any]) -> None:
        if not events:
            return
        for payload in events:
            seq = len(self.log) + 1
            self.check_event(self.plan, payload)
            self.plan = evolve(self.plan, payload, seq)
            if isinstance(payload, ToolCall):  # counted by the plan read model
                self.plan = replace(self.plan, tool_calls=self.plan.tool_calls + 1)
            self.track(payload)
            self.log.append(StoredEvent(seq, payload.type, msgspec.Raw(encode(payload))))
        self.decisions.append(list(events))

    def check_event(self, before: Plan, payload: Any) -> None:
        """What no single event may do, checked against the plan it lands on."""
        if not isinstance(payload, PlanDelta):
            return
        for entry in payload.entries:
            old = before.entries.get(entry.id)
            if old is not None and old.status in TERMINAL and not isinstance(payload, EntryCreated):
                assert entry.status == old.status, f"{type(payload).__name__} moved {old}"
        for lock in payload.locks:
            held = before.locks.get(lock.file)
            assert held is None or held.leaseID == lock.leaseID, f"{lock.file}: two holders"
        if isinstance(payload, EntryDispatched):
            self.check_dispatch(before, payload.entries[0])

    def check_dispatch(self, before: Plan, entry: Entry) -> None:
        """An entry is dispatched only when every condition of the executor holds."""
        old = before.entries[entry.id]
        assert old.status == "pending"
        assert all(before.entries[d].status == "completed" for d in old.depends_on)
        phase = before.phases.get(old.phase_id) if old.phase_id else None
        assert phase is None or phase.status == "active"
        busy = {f for e in before.entries.values() if e.status in ACTIVE for f in e.locked_files()}
        assert not busy & set(old.locked_files())
        assert not set(before.locks) & set(old.locked_files())
        assert not exceeded_caps(before, self.now)
        assert old.budget_usd is None or old.spent_usd < old.budget_usd
        assert old.budget_rounds is None or old.rounds_completed < old.budget_rounds

    def track(self, payload: Any) -> None:
        if isinstance(payload, EntryCreated):
            self.statuses[payload.entryID] = []
            self.exceeded[payload.entryID] = set()
        if isinstance(payload, BudgetExceeded) and payload.cap == "budget_usd":
            assert payload.entryID is not None
            self.exceeded[payload.entryID].add(payload.limit)
        if isinstance(payload, PlanDelta):
            for entry in payload.entries:
                seen = self.statuses[entry.id]
                if not seen or seen[-1] != entry.status:
                    seen.append(entry.status)

    # Picking what a command names: mostly something that exists, sometimes not

    def entry_ids(self) -> list[str]:
        return sorted(self.plan.entries)

    def entry_id(self, data: st.DataObject) -> str:
        known = self.entry_ids()
        return data.draw(st.sampled_from([*known, *known, *self.deleted[-1:], MISSING]))

    def lease_id(self, data: st.DataObject) -> str:
        # Leases by grant time and entry, not by their (random) ids: a replay picks the same.
        leases = sorted(self.plan.leases.values(), key=lambda x: (x.granted_at, x.entryID))
        return data.draw(st.sampled_from([x.id for x in leases]))

    def phase_id(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from([*sorted(self.plan.phases)] * 3 + [MISSING]))

    def has_entries(self) -> bool:
        return bool(self.plan.entries)

    def has_leases(self) -> bool:
        return bool(self.plan.leases)

    # The Master TODO

    @initialize(data=st.data(), start=st.booleans())
    def seed(self, data: st.DataObject, start: bool) -> None:
        """Entries to work on, dispatched once: the workers' rules have something to do."""
        self.create_entries(data, 3)
        if start:
            self.run_executor("start")
        self.dispatch_cycle(force=True)

    @rule(data=st.data(), count=st.integers(1, 3))
    def create_entries(self, data: st.DataObject, count: int) -> None:
        known = self.entry_ids()
        phase_ids = sorted(self.plan.phases)
        given: list[todo.EntryInput] = []
        for _ in range(count):
            fresh = self.fresh("e")
            reused = [*known[-1:], *self.deleted[-1:]]  # taken (refused) or free again
            entry_id = data.draw(st.sampled_from([fresh] * 8 + reused))
            candidates = known + [g.id for g in given if g.id is not None]
            given.append(
                todo.EntryInput(
                    id=entry_id,
                    content=f"task {entry_id}",
                    spec=data.draw(st.sampled_from(SPECS)),
                    priority=data.draw(st.sampled_from(PRIORITIES)),
                    depends_on=data.draw(st.sampled_from([[], [], *([c] for c in candidates)])),
                    parallelizable=data.draw(st.sampled_from([True, True, True, False])),
                    files=data.draw(st.lists(st.sampled_from(FILES), unique=True, max_size=2)),
                    budget_usd=data.draw(BUDGETS),
                    budget_rounds=data.draw(st.sampled_from([None, None, 1, 2])),
                    phase_id=data.draw(st.sampled_from([None] * 6 + phase_ids * 2 + [MISSING])),
                )
            )
        self.run(lambda plan: todo.decide_create(plan, given, self.now))

    @precondition(has_entries)
    @rule(data=st.data(), stale=st.sampled_from([False, False, False, True]))
    def change_status(self, data: st.DataObject, stale: bool) -> None:
        entry_id = self.entry_id(data)
        entry = self.plan.entries.get(entry_id)
        legal = sorted(TRANSITIONS[entry.status]) if entry else []
        to = data.draw(st.sampled_from([*legal, *legal, *STATUSES]))  # mostly legal
        version = None
        if entry is not None:
            version = (
                entry.version - 1 if stale else data.draw(st.sampled_from([None, entry.version]))
            )
        given = todo.StatusInput(status=to, version=version, reason="by hand")  # type: ignore[arg-type]
        decision = self.run(lambda plan: todo.decide_status(plan, entry_id, given, self.now))
        if entry is not None:
            refused = stale or (to != entry.status and to not in TRANSITIONS[entry.status])
            assert (decision is None) == refused
            if decision is not None:
                assert self.plan.entries[entry_id].status == to

    @precondition(has_entries)
    @rule(
        data=st.data(),
        action=st.sampled_from(["budget", "budget", "rounds", "lock", "edit", "delete"]),
    )
    def operate(self, data: st.DataObject, action: str) -> None:
        """An operator edits an entry: its budget, rounds, priority and spec, or deletes it."""
        entry_id = self.entry_id(data)
        entry = self.plan.entries.get(entry_id)
        now = self.now
        match action:
            case "budget":
                usd = todo.EntryBudgetInput(budget_usd=data.draw(BUDGETS))
                self.run(lambda plan: todo.decide_budget(plan, entry_id, usd, now))
            case "rounds":
                rounds = todo.RoundsInput(budget_rounds=data.draw(st.sampled_from([None, 0, 1])))
                self.run(lambda plan: todo.decide_rounds(plan, entry_id, rounds, now))
            case "lock":
                self.run(lambda plan: todo.decide_lock_budget(plan, entry_id, now))
                assert entry is None or self.plan.entries[entry_id].budget_locked
            case "edit":
                priority = todo.PriorityInput(priority=data.draw(st.sampled_from(PRIORITIES)))
                self.run(lambda plan: todo.decide_priority(plan, entry_id, priority, now))
                files = data.draw(st.lists(st.sampled_from(FILES), unique=True, max_size=1))
                spec = todo.SpecInput(
                    requirements="do it", acceptance_criteria=["tests pass"], files_to_modify=files
                )
                self.run(lambda plan: todo.decide_spec(plan, entry_id, spec, now))
                if data.draw(st.booleans()):
                    self.run(lambda plan: todo.decide_freeze(plan, entry_id, now))
            case _:
                self.delete(entry_id, data.draw(st.booleans()))
        after = self.plan.entries.get(entry_id)
        if entry is not None and after is not None and entry.budget_locked:
            assert (after.budget_usd, after.budget_rounds) == (
                entry.budget_usd,
                entry.budget_rounds,
            )

    def delete(self, entry_id: str, force: bool) -> None:
        if self.run(lambda plan: todo.decide_delete(plan, entry_id, force, self.now)):
            assert entry_id not in self.plan.entries
            assert all(entry_id not in e.depends_on for e in self.plan.entries.values())
            self.deleted.append(entry_id)

    # The executor

    @rule(force=st.booleans())
    def dispatch_cycle(self, force: bool) -> None:
        decision = self.run(
            lambda plan: executor.decide_cycle(plan, self.now, LIMITS, force), refusable=False
        )
        assert decision is not None
        active = sum(1 for e in self.plan.entries.values() if e.status in ACTIVE)
        if decision.result.dispatched:
            assert active <= worker_slots(self.plan, LIMITS)
        assert all(lease.expires_at > self.now for lease in self.plan.leases.values())

    @rule(ms=st.sampled_from([300, 1_000, 2_501, 6_001]))
    def tick(self, ms: int) -> None:
        """Time passes; a running executor's dispatcher runs a cycle, as it does each tick."""
        self.now += ms
        if self.plan.executor.status == "running":
            self.dispatch_cycle(force=False)

    @rule(command=st.sampled_from(["start", "start", "pause", "resume", "stop-all"]))
    def run_executor(self, command: str) -> None:
        decide = {
            "start": executor.decide_start,
            "pause": executor.decide_pause,
            "resume": executor.decide_resume,
            "stop-all": executor.decide_stop_all,
        }[command]
        self.run(lambda plan: decide(plan, self.now))
        if command == "stop-all":
            assert not self.plan.leases
            assert not self.plan.locks

    # Workers: sessions claim dispatched entries, then act on the lease they hold

    @precondition(lambda self: any(e.status == "dispatched" for e in self.plan.entries.values()))
    @rule(session=st.sampled_from(SESSIONS))
    def claim(self, session: str) -> None:
        decision = self.run(
            lambda plan: workers.decide_claim(plan, session, self.now, LIMITS), refusable=False
        )
        assert decision is not None
        if decision.result is not None:
            assert self.plan.leases[decision.result.lease.id].sessionID == session

    @precondition(has_leases)
    @rule(data=st.data(), stray=st.sampled_from([False] * 5 + [True]))
    def heartbeat(self, data: st.DataObject, stray: bool) -> None:
        lease_id = MISSING if stray else self.lease_id(data)  # stray: a lease that is gone
        lease = self.plan.leases.get(lease_id)
        decision = self.run(lambda plan: workers.decide_heartbeat(plan, lease_id, self.now, LIMITS))
        assert (decision is not None) == (lease is not None and lease.expires_at > self.now)

    @precondition(has_leases)
    @rule(data=st.data(), passed=st.booleans())
    def complete(self, data: st.DataObject, passed: bool) -> None:
        lease_id = self.lease_id(data)
        lease = self.plan.leases[lease_id]
        entry = self.plan.entries[lease.entryID]
        report = [Check(criterion=c, passed=passed) for c in entry.spec.acceptance_criteria]
        given = workers.CompleteInput(summary="done", report=report)
        decision = self.run(lambda plan: workers.decide_complete(plan, lease_id, given, self.now))
        live = lease.expires_at > self.now
        assert (decision is not None) == (live and "completed" in TRANSITIONS[entry.status])
        if decision is not None:
            assert self.plan.entries[entry.id].status == "completed"
            assert lease_id not in self.plan.leases

    @precondition(has_leases)
    @rule(data=st.data(), retry=st.booleans())
    def fail(self, data: st.DataObject, retry: bool) -> None:
        """A worker may always fail the entry it holds a live lease on."""
        lease_id = self.lease_id(data)
        lease = self.plan.leases[lease_id]
        given = workers.FailInput(reason="tests failed", retry=retry)
        decision = self.run(
            lambda plan: workers.decide_fail(plan, lease_id, given, self.now, LIMITS)
        )
        assert (decision is not None) == (lease.expires_at > self.now), f"could not fail {lease}"
        if decision is not None:
            assert self.plan.entries[lease.entryID].status in ("pending", "failed")

    @precondition(has_leases)
    @rule(data=st.data(), action=st.sampled_from(["ask", "usage", "call"]))
    def work(self, data: st.DataObject, action: str) -> None:
        """A worker asks a question, reports spend, or records a tool call."""
        lease = self.plan.leases[self.lease_id(data)]
        if action == "ask":
            self.ask(lease.sessionID)
        elif action == "usage":
            self.spend(data, lease.sessionID, lease.entryID)
        else:
            self.tool_call(lease.sessionID, lease.entryID)

    def tool_call(self, session: str, entry_id: str) -> None:
        call = ToolCall(
            tool="edit",
            sessionID=session,
            callID=self.fresh("call_"),
            entryID=entry_id,
            timestamp=self.now,
            duration=5,
            status="ok",
            corrections=[],
            agentName="worker",
            workspaceID="ws_machine",
        )
        self.commit([call])

    # Questions: an entry whose worker asks waits for input until the question is settled

    def ask(self, session: str) -> None:
        question = Question(
            id=self.fresh("que_"),
            sessionID=session,
            questions=[QuestionItem("Which way?", "Way", [QuestionOption("left")])],
            tool=ToolRef("msg_1", "call_1"),
        )
        self.commit([question, *_entry_follows(self.plan, session, self.now, True)])
        self.questions[question.id] = question

    @precondition(lambda self: bool(self.questions))
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        question = self.questions.pop(data.draw(st.sampled_from(sorted(self.questions))))
        answered = QuestionAnswered(question.id, question.sessionID, [["left"]])
        self.commit([answered, *_entry_follows(self.plan, question.sessionID, self.now, False)])

    # Budgets

    @rule(data=st.data(), session=st.sampled_from(SESSIONS))
    def report_usage(self, data: st.DataObject, session: str) -> None:
        """Spend of no entry, of any entry, or of one that does not exist."""
        self.spend(data, session, data.draw(st.sampled_from([None, *self.entry_ids(), MISSING])))

    def spend(self, data: st.DataObject, session: str, entry_id: str | None) -> None:
        given = budget.UsageInput(
            sessionID=session,
            entryID=entry_id,
            cost_usd=data.draw(MONEY),
            tokens=data.draw(st.sampled_from([0, 400, 5_000])),
            rounds=data.draw(st.integers(0, 2)),
        )
        decision = self.run(lambda plan: budget.decide_usage(plan, given, self.now, LIMITS))
        assert (decision is None) == (entry_id == MISSING)

    @rule(data=st.data(), caps=st.lists(st.sampled_from(sorted(CAP_VALUES)), max_size=3))
    def set_caps(self, data: st.DataObject, caps: list[str]) -> None:
        patch = {cap: data.draw(st.sampled_from(CAP_VALUES[cap])) for cap in caps}
        self.run(lambda plan: budget.decide_caps(plan, patch, self.now, LIMITS))

    # Phases

    @rule(data=st.data(), action=st.sampled_from(["create", "create", "patch", "verify"]))
    def phase(self, data: st.DataObject, action: str) -> None:
        if action == "create" or not self.plan.phases:
            phase_id = data.draw(st.sampled_from([self.fresh("p"), *sorted(self.plan.phases)[:1]]))
            given = phases.PhaseInput(
                id=phase_id,
                name=f"phase {phase_id}",
                status=data.draw(st.sampled_from(["pending", "pending", "active"])),
                phase_rounds=data.draw(st.sampled_from([None, 1, 2])),
            )
            self.run(lambda plan: phases.decide_create(plan, given, self.now))
        elif action == "patch":
            phase_id = self.phase_id(data)
            patch = phases.PhasePatch(
                status=data.draw(st.sampled_from([None, *PHASE_TRANSITIONS])),
                description=data.draw(st.sampled_from([None, "more"])),
                phase_rounds=data.draw(st.sampled_from([None, 1, 3])),
            )
            self.run(lambda plan: phases.decide_update(plan, phase_id, patch, self.now))
        else:
            self.verify(self.phase_id(data))

    def verify(self, phase_id: str) -> None:
        before = self.plan.phases.get(phase_id)
        decision = self.run(lambda plan: phases.decide_verify(plan, phase_id, self.now))
        assert (decision is not None) == (before is not None and before.status == "active")
        if decision is not None and decision.result.passed:
            assert self.plan.phases[phase_id].status == "completed"

    # Invariants

    @invariant()
    def replaying_the_log_rebuilds_the_state(self) -> None:
        assert same_state(fold(self.log), self.plan)

    @invariant()
    def seqs_are_gap_free(self) -> None:
        assert [e.seq for e in self.log] == list(range(1, len(self.log) + 1))
        domain = [e.seq for e in self.log if e.type in DOMAIN_TYPES]
        assert self.plan.version == (domain[-1] if domain else 0)

    @invariant()
    def no_exit_from_a_terminal_status(self) -> None:
        for entry_id, seen in self.statuses.items():
            final = [s for s in seen if s in TERMINAL]
            if final:
                assert seen[-1] == final[0], f"{entry_id} went {' -> '.join(seen)}"

    @invariant()
    def spend_beyond_a_locked_budget_is_seen(self) -> None:
        for entry in self.plan.entries.values():
            limit = entry.budget_usd
            if entry.budget_locked and limit is not None and entry.spent_usd > limit:
                assert limit in self.exceeded[entry.id], (
                    f"{entry.id} spent {entry.spent_usd} of a locked {limit}, no budget.exceeded"
                )

    @invariant()
    def spend_is_never_negative(self) -> None:
        assert self.plan.usage.cost_usd >= 0
        assert self.plan.usage.tokens >= 0
        assert all(e.spent_usd >= 0 and e.tokens >= 0 for e in self.plan.entries.values())

    @invariant()
    def leases_and_locks_belong_to_active_work(self) -> None:
        plan = self.plan
        for lease in plan.leases.values():
            entry = plan.entries.get(lease.entryID)
            assert entry is not None, f"{lease} on no entry"
            assert entry.status in ACTIVE, f"{lease} on {entry}"
            assert entry.assigned_to == lease.sessionID
        assert len({x.entryID for x in plan.leases.values()}) == len(plan.leases)
        assert len({x.sessionID for x in plan.leases.values()}) == len(plan.leases)
        for file, lock in plan.locks.items():
            holder = plan.leases.get(lock.leaseID)
            assert holder is not None, f"{file} locked by {lock.leaseID}, which is not held"
            assert file == lock.file
            assert file in holder.files
            assert (lock.entryID, lock.sessionID) == (holder.entryID, holder.sessionID)


TestPlanMachine = PlanMachine.TestCase
TestPlanMachine.settings = MACHINE_SETTINGS


# The Redis read model against the fold


def assert_same(actual: Plan, expected: Plan) -> None:
    """``same_state``, naming what differs when it does not hold."""
    if not same_state(actual, expected):
        a, b = msgspec.to_builtins(actual), msgspec.to_builtins(expected)
        differ = {k: (a[k], b[k]) for k in a if k != "tool_calls" and a[k] != b[k]}
        raise AssertionError(f"plans differ: {differ or 'only in order'}")


def generated_runs(count: int) -> list[tuple[list[list[Any]], Plan]]:
    """``count`` command sequences the machine generates: each decision's events, and the
    plan they left."""
    runs: list[tuple[list[list[Any]], Plan]] = []

    class Recording(PlanMachine):
        def teardown(self) -> None:
            runs.append((self.decisions, self.plan))

    run_state_machine_as_test(
        Recording,
        settings=settings(MACHINE_SETTINGS, max_examples=count, database=None),
    )
    return runs


@pytest.mark.anyio
async def test_read_model_is_the_fold(client: Redis) -> None:
    eventlog = EventLog(client, retention=0, idempotency_ttl_ms=60_000)
    projector = Projector(eventlog)
    for decisions, plan in generated_runs(12):
        ws = f"ws_{ULID()}"
        for events in decisions:
            await eventlog.append(ws, [new_event(e, *entities(e)) for e in events])
        await projector.catch_up(ws)
        stored = await eventlog.read(ws, 0, 100_000)
        assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
        assert same_state(fold(stored), plan)
        calls = sum(1 for e in stored if e.type == ToolCall.type)
        projected = await read_plan(client, ws)
        assert_same(projected, plan)
        assert projected.tool_calls == calls
        await projector.rebuild(ws)
        rebuilt = await read_plan(client, ws)
        assert_same(rebuilt, plan)
        assert rebuilt.tool_calls == calls
