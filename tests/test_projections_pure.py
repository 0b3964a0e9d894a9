"""The projections' pure ``apply`` functions, without Redis: the writes each event produces.

``Store`` is a tiny in-memory interpreter of the commands projections emit (the same ones
``apply.lua`` runs), so that sequences of events can be folded and compared with a reference.
"""

from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.events import (
    ConfigUpdated,
    OrchestrationPurged,
    Payload,
    Question,
    QuestionAnswered,
    QuestionExpired,
    QuestionItem,
    QuestionOption,
    QuestionRejected,
    StoredEvent,
    ToolCall,
    ToolRef,
    new_event,
)
from orchestrator.keys import LOG_FILTER_FIELDS, WorkspaceKeys
from projections.base import Command, Projection, Word
from projections.config import ConfigProjection
from projections.log import LogProjection, member
from projections.questions import QuestionsProjection
from projections.runner import all_projections
from projections.sessions import SessionsProjection

KEYS = WorkspaceKeys("ws_pure")


def stored(seq: int, payload: Payload) -> StoredEvent:
    new = new_event(payload)
    return StoredEvent(seq=seq, type=new.type, payload=msgspec.Raw(new.payload))


def tool_call(**fields: Any) -> ToolCall:
    base: dict[str, Any] = {
        "tool": "fs.read",
        "sessionID": "s1",
        "callID": "call_1",
        "timestamp": 1_717_691_432_000,
        "duration": 5,
        "status": "ok",
        "corrections": [],
        "agentName": "build-agent",
        "workspaceID": "ws_pure",
    }
    return ToolCall(**{**base, **fields})


def question(qid: str, session: str = "s1", expires_at: int | None = None) -> Question:
    item = QuestionItem("Which?", "Pick", [QuestionOption("A"), QuestionOption("B")])
    return Question(
        id=qid,
        sessionID=session,
        questions=[item],
        tool=ToolRef("msg_1", "call_1"),
        expires_at=expires_at,
    )


def writes(event: StoredEvent) -> dict[str, list[Command]]:
    return {p.name: p.apply(KEYS, event) for p in all_projections()}


# One event at a time


def test_config_updated_writes_the_merged_doc_and_its_version() -> None:
    event = stored(7, ConfigUpdated(patch={"a": None, "b": 2}, config={"b": 2, "c": [1]}))
    assert writes(event) == {
        "config": [("HSET", KEYS.config, "doc", b'{"b":2,"c":[1]}', "version", 7)],
        "log": [],
        "questions": [],
        "sessions": [],
        "plan": [],
        "imports": [],
    }


def test_a_full_tool_call_is_stored_and_indexed_by_every_filter_field() -> None:
    call = tool_call(entryID="entry_1", container_id="ctr_1", title="Read", target="/a")
    event = stored(12, call)
    m = "0000000000000012"
    ts = call.timestamp
    index_keys = [
        f"{KEYS.prefix}:log:by:tool:fs.read",
        f"{KEYS.prefix}:log:by:status:ok",
        f"{KEYS.prefix}:log:by:sessionID:s1",
        f"{KEYS.prefix}:log:by:agentName:build-agent",
        f"{KEYS.prefix}:log:by:entryID:entry_1",
        f"{KEYS.prefix}:log:by:container_id:ctr_1",
        f"{KEYS.prefix}:log:by:status+tool:ok:fs.read",
    ]
    assert writes(event) == {
        "config": [],
        "log": [
            ("HSET", KEYS.log_calls, m, bytes(event.payload)),
            ("ZADD", KEYS.log_all, ts, m),
            *[("ZADD", key, ts, m) for key in index_keys],
            ("SADD", KEYS.log_indexes, *index_keys),
            (
                "CALLIDS",
                f"{KEYS.prefix}:log:callids",
                KEYS.log_all,
                KEYS.log_indexes,
                f"{KEYS.prefix}:log:by:callID:",
                "call_1",
                m,
                ts,
            ),
        ],
        "questions": [],
        "sessions": [("SADD", KEYS.sessions, "s1")],
        "plan": [("HINCRBY", KEYS.plan, "tool_calls", 1)],
        "imports": [],
    }


def test_a_sparse_tool_call_is_not_indexed_by_absent_fields() -> None:
    event = stored(3, tool_call(sessionID="s2", status="intercepted"))
    log_writes = LogProjection().apply(KEYS, event)
    indexed = {w[1] for w in log_writes if w[0] == "ZADD"} - {KEYS.log_all}
    assert indexed == {
        KEYS.log_index("tool", "fs.read"),
        KEYS.log_index("status", "intercepted"),
        KEYS.log_index("sessionID", "s2"),
        KEYS.log_index("agentName", "build-agent"),
        KEYS.log_status_tool("intercepted", "fs.read"),
    }
    assert not any(":entryID:" in str(k) or ":container_id:" in str(k) for k in indexed)
    assert SessionsProjection().apply(KEYS, event) == [("SADD", KEYS.sessions, "s2")]


def test_asking_a_question_records_it_as_pending() -> None:
    plain = stored(4, question("que_1", session="s9"))
    assert writes(plain) == {
        "config": [],
        "log": [],
        "questions": [
            ("HSET", KEYS.questions, "que_1", bytes(plain.payload)),
            ("ZADD", KEYS.questions_order, 4, "que_1"),
        ],
        "sessions": [("SADD", KEYS.sessions, "s9")],
        "plan": [],
        "imports": [],
    }
    expiring = stored(5, question("que_2", expires_at=1_800_000_000_000))
    assert QuestionsProjection().apply(KEYS, expiring) == [
        ("HSET", KEYS.questions, "que_2", bytes(expiring.payload)),
        ("ZADD", KEYS.questions_order, 5, "que_2"),
        ("ZADD", KEYS.questions_expiry, 1_800_000_000_000, "que_2"),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        QuestionAnswered("que_1", "s1", [["A"]]),
        QuestionRejected("que_1", "s1", reason="no"),
        QuestionRejected("que_1", "s1"),
        QuestionExpired("que_1", "s1", 1_800_000_000_000),
    ],
    ids=["answered", "rejected", "rejected-no-reason", "expired"],
)
def test_a_settled_question_is_no_longer_pending(payload: Payload) -> None:
    assert writes(stored(9, payload)) == {
        "config": [],
        "log": [],
        "questions": [
            ("HDEL", KEYS.questions, "que_1"),
            ("ZREM", KEYS.questions_order, "que_1"),
            ("ZREM", KEYS.questions_expiry, "que_1"),
        ],
        "sessions": [],  # answering adds no session
        "plan": [],
        "imports": [],
    }


def test_purge_drops_every_read_model_but_config() -> None:
    event = stored(20, OrchestrationPurged(purged=["todos", "events"]))
    assert writes(event) == {
        "config": [],
        "log": [
            ("DELMEMBERS", KEYS.log_indexes),
            ("DEL", KEYS.log_calls, KEYS.log_all, KEYS.log_call_ids),
        ],
        "questions": [
            ("DEL", KEYS.questions, KEYS.questions_order, KEYS.questions_expiry),
        ],
        "sessions": [("DEL", KEYS.sessions)],
        "plan": [
            ("DEL", KEYS.plan, KEYS.entries, KEYS.todo_events, KEYS.phases),
            ("DEL", KEYS.leases, KEYS.locks),
            ("DELMEMBERS", KEYS.phase_memories),
        ],
        "imports": [("DEL", KEYS.imports)],
    }
    for projection in all_projections():
        if projection.name != "config":
            assert projection.apply(KEYS, event) == projection.drop(KEYS)
    assert ConfigProjection().drop(KEYS) == [("DEL", KEYS.config)]


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("todo.archived", b'{"id":"todo_1","sessionID":"s1"}'),
        ("lock.granted", b'{"path":"a"}'),
        ("from.the.future", b"not json at all"),
        ("tool.calls", b'{"tool":"x"}'),  # near miss of a known name
    ],
)
def test_unknown_event_types_produce_no_writes(kind: str, payload: bytes) -> None:
    event = StoredEvent(seq=1, type=kind, payload=msgspec.Raw(payload))
    assert event.decode() is None
    assert writes(event) == {
        "config": [],
        "log": [],
        "questions": [],
        "sessions": [],
        "plan": [],
        "imports": [],
    }


def test_newer_payload_fields_are_ignored() -> None:
    """Schema evolution: an event written by a newer version still projects."""
    raw = msgspec.json.encode({**msgspec.to_builtins(tool_call()), "newField": {"x": 1}})
    event = StoredEvent(seq=2, type="tool.call", payload=msgspec.Raw(raw))
    assert ("HSET", KEYS.log_calls, member(2), raw) in LogProjection().apply(KEYS, event)


def test_members_sort_like_seqs() -> None:
    seqs = [1, 9, 10, 99, 100, 12345, 10**15]
    assert sorted(member(s) for s in seqs) == [member(s) for s in seqs]


# Any tool call

names = st.text(min_size=1, max_size=24)
optional_names = st.none() | names
session_ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,24}", fullmatch=True)
statuses = st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True)
epoch_ms = st.integers(min_value=0, max_value=2**53)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
tool_calls = st.builds(
    ToolCall,
    tool=names,
    sessionID=session_ids,
    callID=names,
    entryID=optional_names,
    title=st.none() | st.text(max_size=40),
    timestamp=epoch_ms,
    duration=epoch_ms,
    status=statuses,
    corrections=st.lists(json_values, max_size=3),
    target=st.none() | st.text(max_size=40),
    agentName=names,
    container_id=optional_names,
    workspaceID=st.text(max_size=24),
)


@given(call=tool_calls, seq=st.integers(min_value=1, max_value=10**12))
def test_any_tool_call_is_indexed_by_exactly_its_present_filter_fields(
    call: ToolCall, seq: int
) -> None:
    event = stored(seq, call)
    log_writes = LogProjection().apply(KEYS, event)
    expected = {
        KEYS.log_index(f, getattr(call, f))
        for f in LOG_FILTER_FIELDS
        if getattr(call, f) is not None and f != "callID"
    } | {KEYS.log_status_tool(call.status, call.tool)}
    zadds = [w for w in log_writes if w[0] == "ZADD"]
    # Every ZADD is scored by the call's timestamp and names the call by its padded seq.
    assert {(w[2], w[3]) for w in zadds} == {(call.timestamp, member(seq))}
    assert [w[1] for w in zadds] == [KEYS.log_all, *(w[1] for w in zadds[1:])]
    assert {w[1] for w in zadds[1:]} == expected
    assert len(zadds) == 1 + len(expected)
    (registry,) = [w for w in log_writes if w[0] == "SADD"]
    assert registry[1] == KEYS.log_indexes
    assert set(registry[2:]) == expected
    (stored_call,) = [w for w in log_writes if w[0] == "HSET"]
    assert stored_call == ("HSET", KEYS.log_calls, member(seq), bytes(event.payload))
    assert msgspec.json.decode(stored_call[3], type=ToolCall) == call
    # The callID is indexed by a hash: callID -> seq.
    (call_ids,) = [w for w in log_writes if w[0] == "CALLIDS"]
    assert call_ids[1] == KEYS.log_call_ids
    assert call_ids[5:] == (call.callID, member(seq), call.timestamp)
    # The index keys stay in the workspace's hash slot.
    assert all(str(k).startswith(KEYS.prefix + ":log:by:") for k in expected)
    assert SessionsProjection().apply(KEYS, event) == [("SADD", KEYS.sessions, call.sessionID)]


# Folding sequences of events


def word(w: Word) -> bytes:
    if isinstance(w, bytes):
        return w
    return str(w).encode()


@dataclass
class Store:
    """The subset of Redis the projections write, with Redis' empty-key semantics."""

    hashes: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    zsets: dict[str, dict[bytes, float]] = field(default_factory=dict)
    sets: dict[str, set[bytes]] = field(default_factory=dict)

    def run(self, commands: list[Command]) -> None:
        for name, *args in commands:
            getattr(self, str(name).lower())(*args)
        self.hashes = {k: v for k, v in self.hashes.items() if v}
        self.zsets = {k: v for k, v in self.zsets.items() if v}
        self.sets = {k: v for k, v in self.sets.items() if v}

    def hset(self, key: str, *pairs: Word) -> None:
        h = self.hashes.setdefault(key, {})
        for f, v in zip(pairs[::2], pairs[1::2], strict=True):
            h[word(f)] = word(v)

    def hincrby(self, key: str, f: Word, by: Word) -> None:
        h = self.hashes.setdefault(key, {})
        h[word(f)] = str(int(h.get(word(f), b"0")) + int(by)).encode()

    def hdel(self, key: str, *fields: Word) -> None:
        for f in fields:
            self.hashes.get(key, {}).pop(word(f), None)

    def zadd(self, key: str, score: Word, m: Word) -> None:
        self.zsets.setdefault(key, {})[word(m)] = float(score)

    def zrem(self, key: str, *members: Word) -> None:
        for m in members:
            self.zsets.get(key, {}).pop(word(m), None)

    def sadd(self, key: str, *members: Word) -> None:
        self.sets.setdefault(key, set()).update(word(m) for m in members)

    def delete(self, *keys: str) -> None:
        for key in keys:
            self.hashes.pop(key, None)
            self.zsets.pop(key, None)
            self.sets.pop(key, None)

    def callids(self, key: str, all_: str, registry: str, prefix: str, *triples: Word) -> None:
        """apply.lua's CALLIDS: callID -> seq, or "*" and a sorted set once it repeats."""
        h = self.hashes.setdefault(key, {})
        for call_id, seq, score in zip(triples[::3], triples[1::3], triples[2::3], strict=True):
            first = h.setdefault(word(call_id), word(seq))
            if first == word(seq):
                continue
            index = f"{prefix}{call_id!s}"
            if first != b"*":
                self.zadd(index, self.zsets[all_][first], first)
                h[word(call_id)] = b"*"
                self.sadd(registry, index)
            self.zadd(index, score, seq)

    def delmembers(self, registry: str) -> None:
        self.delete(*(m.decode() for m in self.sets.get(registry, set())), registry)

    def __getattr__(self, name: str) -> Any:
        if name == "del":
            return self.delete
        raise AttributeError(name)


def project(events: list[StoredEvent], projections: list[Projection]) -> Store:
    store = Store()
    for event in events:
        for projection in projections:
            store.run(projection.apply(KEYS, event))
    return store


@dataclass
class Reference:
    """What the read models must hold, computed the obvious way."""

    config: tuple[dict[str, Any], int] | None = None
    calls: dict[int, ToolCall] = field(default_factory=dict)
    pending: dict[str, tuple[Question, int]] = field(default_factory=dict)
    sessions: set[str] = field(default_factory=set)

    def fold(self, seq: int, payload: Payload | None) -> None:
        match payload:
            case ConfigUpdated(config=dict() as config):  # the old shape: whole, as it was
                self.config = (config, seq)
            case ToolCall():
                self.calls[seq] = payload
                self.sessions.add(payload.sessionID)
            case Question():
                self.pending[payload.id] = (payload, seq)
                self.sessions.add(payload.sessionID)
            case QuestionAnswered(id=qid) | QuestionRejected(id=qid) | QuestionExpired(id=qid):
                self.pending.pop(qid, None)
            case OrchestrationPurged():
                self.calls.clear()
                self.pending.clear()
                self.sessions.clear()

    def store(self) -> Store:
        expected = Store()
        if self.config is not None:
            doc, version = self.config
            expected.hset(KEYS.config, "doc", msgspec.json.encode(doc), "version", version)
        self.log(expected)
        for qid, (q, seq) in self.pending.items():
            expected.hset(KEYS.questions, qid, msgspec.json.encode(q))
            expected.zadd(KEYS.questions_order, seq, qid)
            if q.expires_at is not None:
                expected.zadd(KEYS.questions_expiry, q.expires_at, qid)
        for session in self.sessions:
            expected.sadd(KEYS.sessions, session)
        if self.calls:  # the plan counts tool calls for the max_tool_calls cap
            expected.hset(KEYS.plan, "tool_calls", len(self.calls))
        return expected

    def log(self, expected: Store) -> None:
        for seq, call in self.calls.items():
            expected.hset(KEYS.log_calls, member(seq), msgspec.json.encode(call))
            expected.zadd(KEYS.log_all, call.timestamp, member(seq))
            indexes = [
                KEYS.log_index(f, value)
                for f in LOG_FILTER_FIELDS
                if (value := getattr(call, f)) is not None and f != "callID"
            ]
            for index in [*indexes, KEYS.log_status_tool(call.status, call.tool)]:
                expected.zadd(index, call.timestamp, member(seq))
                expected.sadd(KEYS.log_indexes, index)
        # callID -> seq; "*" and a sorted set for a callID of several calls.
        by_id: dict[str, list[int]] = {}
        for seq, call in self.calls.items():
            by_id.setdefault(call.callID, []).append(seq)
        for call_id, seqs in by_id.items():
            expected.hset(KEYS.log_call_ids, call_id, member(seqs[0]) if len(seqs) == 1 else "*")
            index = KEYS.log_index("callID", call_id)
            for seq in seqs if len(seqs) > 1 else []:
                expected.zadd(index, self.calls[seq].timestamp, member(seq))
                expected.sadd(KEYS.log_indexes, index)


QIDS = [f"que_{i}" for i in range(6)]
small_names = st.sampled_from(["fs.read", "fs.write", "net.fetch"])
small_sessions = st.sampled_from(["s1", "s2", "s3"])


@st.composite
def histories(draw: st.DrawFn) -> list[Payload | None]:
    """Plausible event histories: question ids are asked once (ids are minted), settling
    events name any id (settling twice or before asking must be harmless)."""
    unasked = list(QIDS)
    history: list[Payload | None] = []
    for _ in range(draw(st.integers(min_value=0, max_value=40))):
        kind = draw(st.sampled_from(["call", "ask", "settle", "config", "purge", "unknown"]))
        if kind == "call":
            history.append(
                tool_call(
                    tool=draw(small_names),
                    sessionID=draw(small_sessions),
                    status=draw(st.sampled_from(["ok", "error"])),
                    callID=f"call_{len(history)}",
                    entryID=draw(st.none() | st.just("entry_1")),
                    container_id=draw(st.none() | st.sampled_from(["c1", "c2"])),
                    timestamp=draw(st.integers(min_value=0, max_value=10**13)),
                )
            )
        elif kind == "ask" and unasked:
            qid = unasked.pop(draw(st.integers(min_value=0, max_value=len(unasked) - 1)))
            expires = draw(st.none() | st.integers(min_value=0, max_value=10**13))
            history.append(question(qid, draw(small_sessions), expires))
        elif kind == "settle":
            qid = draw(st.sampled_from(QIDS))
            settling: list[Payload] = [
                QuestionAnswered(qid, "s1", [["A"]]),
                QuestionRejected(qid, "s1"),
                QuestionExpired(qid, "s1", 5),
            ]
            history.append(draw(st.sampled_from(settling)))
        elif kind == "config":
            history.append(
                ConfigUpdated(patch={}, config={"n": len(history), "k": draw(st.text(max_size=3))})
            )
        elif kind == "purge":
            history.append(OrchestrationPurged(purged=["events"]))
        else:
            history.append(None)
    return history


def to_events(history: list[Payload | None]) -> list[StoredEvent]:
    return [
        stored(seq, p)
        if p is not None
        else StoredEvent(seq, "todo.archived", msgspec.Raw(b'{"id":"t"}'))
        for seq, p in enumerate(history, start=1)
    ]


@settings(max_examples=300)
@given(history=histories())
def test_folding_any_history_gives_the_reference_read_models(
    history: list[Payload | None],
) -> None:
    events = to_events(history)
    reference = Reference()
    for event in events:
        reference.fold(event.seq, event.decode())
    assert project(events, all_projections()) == reference.store()


@given(history=histories())
def test_projections_write_disjoint_keys(history: list[Payload | None]) -> None:
    """Each projection owns its keys, so each can be dropped and rebuilt alone."""
    events = to_events(history)
    owned: dict[str, set[str]] = {}
    for projection in all_projections():
        store = project(events, [projection])
        owned[projection.name] = {*store.hashes, *store.zsets, *store.sets}
    names = list(owned)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not owned[a] & owned[b], (a, b)
    # And folding them together equals folding each alone.
    together = project(events, all_projections())
    assert {*together.hashes, *together.zsets, *together.sets} == set().union(*owned.values())
