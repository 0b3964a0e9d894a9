"""The projector: feeds events, in seq order, to every projection of a workspace.

Each batch of a projection's writes is applied by one Lua script together with its
checkpoint, and only if the checkpoint is still the one read before the batch. So replaying,
crashing mid-way, or several replicas projecting the same workspace at once never applies an
event twice or skips one. Projection runs where events are appended: an append in this
process wakes the workspace's projector task, which catches up from the checkpoint.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup, TaskStatus
from redis.exceptions import RedisError

from orchestrator import scripts
from orchestrator.errors import Unavailable
from orchestrator.eventlog import EventLog
from orchestrator.events import OrchestrationPurged, StoredEvent
from orchestrator.keys import WorkspaceKeys
from projections.base import BatchProjection, Command, Projection, Word
from projections.config import ConfigProjection
from projections.imports import ImportsProjection
from projections.log import LogProjection
from projections.plan import PlanProjection
from projections.questions import QuestionsProjection
from projections.sessions import SessionsProjection

log = structlog.get_logger(__name__)


def all_projections() -> list[Projection]:
    return [
        ConfigProjection(),
        LogProjection(),
        QuestionsProjection(),
        SessionsProjection(),
        PlanProjection(),
        ImportsProjection(),
    ]


_pack = msgspec.msgpack.Encoder().encode
# Commands that only add to one key, taking any number of (field or score, member) pairs: a
# run of them on one key can be merged without changing the result. apply.lua's CALLIDS is
# one too, with (callID, seq, score) triples after a header of 5 words.
_ADDITIVE = {"HSET", "ZADD", "SADD", "CALLIDS"}
_SHAPES = {"CALLIDS": (5, 3)}  # words before the groups, words per group; others: (2, 2)
_MAX_WORDS = 4000  # Lua's unpack() returns at most 8000 values
_YIELD_EVERY = 100  # events projected between two turns of the event loop


def _coalesce(commands: list[Command]) -> list[list[Word]]:
    """Merge additive commands on the same key (between other commands) into one each, cut
    to about ``_MAX_WORDS`` words by ``_split``. A set member added twice is added once (a
    batch's index keys and session ids repeat on almost every event); increments of the same
    field in a row are summed."""
    merged: list[list[Word]] = []
    open_runs: dict[tuple[Word, Word], list[Word]] = {}
    members: dict[tuple[Word, Word], dict[Word, None]] = {}
    for command in commands:
        verb = command[0]
        if verb == "HINCRBY" and merged and _same_counter(merged[-1], command):
            merged[-1][3] += command[3]  # type: ignore[operator]  # one count per tool call
            continue
        if verb not in _ADDITIVE or (verb == "ZADD" and isinstance(command[2], str)):
            open_runs.clear()  # a barrier (DEL, ZREM, ZADD with flags...): keep order around it
            members.clear()
            merged.append(list(command))
            continue
        key = (verb, command[1])
        head = _SHAPES.get(verb, (2, 2))[0]
        words = command[head:]
        if verb == "SADD":
            seen = members.setdefault(key, {})
            words = tuple(m for m in words if m not in seen)
            seen.update(dict.fromkeys(words))
            if not words:
                continue
        run = open_runs.get(key)
        if run is None:
            run = open_runs[key] = list(command[:head])
            merged.append(run)
        run += words
    return _split([tuple(run) for run in merged])


def _words(command: list[Word]) -> list[object]:
    # Lua's cmsgpack has no binary type: bytes travel as a msgpack str32, byte for byte.
    if bytes not in map(type, command):
        return command  # type: ignore[return-value]
    return [
        msgspec.Raw(b"\xdb" + len(w).to_bytes(4, "big") + w) if isinstance(w, bytes) else w
        for w in command
    ]


def _same_counter(previous: list[Word], command: Command) -> bool:
    """Two HINCRBYs in a row of the same integer field: one with their sum does the same."""
    return (
        previous[0] == "HINCRBY"
        and previous[1:3] == list(command[1:3])
        and isinstance(previous[3], int)
        and isinstance(command[3], int)
    )


def _split(commands: list[Command]) -> list[list[Word]]:
    """Commands already merged per key, each additive one cut to about ``_MAX_WORDS`` words,
    between its groups (pairs, or CALLIDS's triples)."""
    split: list[list[Word]] = []
    for command in commands:
        head, group = _SHAPES.get(str(command[0]), (2, 2))
        if len(command) <= _MAX_WORDS + head or command[0] not in _ADDITIVE:
            split.append(list(command))
            continue
        step = _MAX_WORDS - _MAX_WORDS % group
        for start in range(head, len(command), step):
            split.append([*command[:head], *command[start : start + step]])
    return split


def _flatten(commands: list[Command]) -> list[Any]:
    """The writes as one msgpack argument for apply.lua. One argument per word cost more in
    redis-py (which packs each in Python) than the projection itself."""
    return [_pack([_words(command) for command in _coalesce(commands)])]


class Projector:
    def __init__(
        self,
        eventlog: EventLog,
        projections: Sequence[Projection] | None = None,
        batch: int = 1000,
        idle_s: float = 60.0,
    ) -> None:
        self.eventlog = eventlog
        self.redis = eventlog.redis
        self.projections = list(projections or all_projections())
        # Those folded an event at a time first (see _calls). A runtime Protocol check costs
        # microseconds, and live projection would run it for every small batch: once, here.
        self._folds: list[tuple[Projection, BatchProjection | None]] = sorted(
            ((p, p if isinstance(p, BatchProjection) else None) for p in self.projections),
            key=lambda fold: fold[1] is not None,
        )
        self.batch = batch
        self.idle_s = idle_s
        self._caught_up: dict[str, int] = {}  # workspace -> seq every projection has reached
        self._wakeups: dict[str, asyncio.Event] = {}
        self._progress = asyncio.Condition()
        self._task_group: TaskGroup | None = None

    # Catching up

    async def checkpoints(self, workspace_id: str) -> dict[str, int]:
        keys = WorkspaceKeys(workspace_id)
        names = [p.name for p in self.projections]
        raw = await self.redis.hmget(keys.checkpoints, names)
        return {name: int(v or 0) for name, v in zip(names, raw, strict=True)}

    async def catch_up(self, workspace_id: str) -> int:
        """Apply every retained event past each checkpoint; return the seq all have reached."""
        reached = 0
        async for seq in self.batches(workspace_id):
            reached = seq
        return reached

    async def batches(self, workspace_id: str) -> AsyncIterator[int]:
        """Apply every retained event past each checkpoint, yielding the seq all projections
        have reached after each batch.

        Pipelined: while Redis applies one batch, the next is already read and its writes
        computed, so Python and Redis work at once rather than in turn. Each apply still
        expects the checkpoint the one before it leaves, so if another projector moved a
        checkpoint meanwhile, the pipeline's next apply is refused and this starts over from
        the checkpoints as they are.
        """
        while True:
            checkpoints = await self.checkpoints(workspace_id)
            low = min(checkpoints.values())
            events = await self.eventlog.read(workspace_id, low, self.batch)
            in_flight: asyncio.Task[dict[str, int]] | None = None
            try:
                while events:
                    calls = await self._calls(workspace_id, checkpoints, events)
                    if in_flight is not None:
                        if await in_flight != checkpoints:
                            break  # another projector moved: start over from the checkpoints
                        yield min(checkpoints.values())
                    # The next batch is read before this one's writes are sent: Redis serves
                    # the read at once, not after the writes, and the writes of the next
                    # batch are computed while Redis applies these.
                    position = events[-1].seq
                    events = await self.eventlog.read(workspace_id, position, self.batch)
                    in_flight = asyncio.ensure_future(self._run(calls, checkpoints))
                    checkpoints = {n: max(seq, position) for n, seq in checkpoints.items()}
                else:
                    if in_flight is None:
                        yield low
                        return
                    if await in_flight == checkpoints:
                        yield min(checkpoints.values())
                        return
            finally:
                if in_flight is not None:
                    if not in_flight.done():
                        in_flight.cancel()
                    elif not in_flight.cancelled():
                        in_flight.exception()  # seen: if it failed too, this ending says why

    async def _calls(
        self, workspace_id: str, checkpoints: dict[str, int], events: list[StoredEvent]
    ) -> dict[str, scripts.Call]:
        low = min(checkpoints.values())
        if events[0].seq > low + 1 and events[0].type != OrchestrationPurged.type:
            # Trimmed before it was projected: the read models miss these events.
            log.error("projection.gap", workspace=workspace_id, after=low, next=events[0].seq)
        keys = WorkspaceKeys(workspace_id)
        # The writes of the batch before may still be on their way to Redis (a batch is a few
        # hundred KB, more than a socket buffer takes at once), and Redis applies them while
        # these are computed only once they have arrived: the event loop must get a turn every
        # now and then to send them. Those folded an event at a time go first, as they take
        # turns as they go.
        calls = {}
        for p, batched in self._folds:
            call = await self._apply_call(keys, p, batched, checkpoints[p.name], events)
            if call is not None:
                calls[p.name] = call
        return calls

    async def _run(
        self, calls: dict[str, scripts.Call], checkpoints: dict[str, int]
    ) -> dict[str, int]:
        """Run the apply calls in one round trip; the checkpoints after them."""
        reached = dict(checkpoints)
        replies = await scripts.run_all(self.redis, list(calls.values()))
        for name, reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            reached[name] = int(reply[0])  # ours, or the checkpoint another projector reached
        return reached

    async def _apply_call(
        self,
        keys: WorkspaceKeys,
        projection: Projection,
        batched: BatchProjection | None,
        checkpoint: int,
        events: list[StoredEvent],
    ) -> scripts.Call | None:
        todo = [e for e in events if e.seq > checkpoint]
        if not todo:
            return None
        if batched is not None:
            commands = _split(batched.apply_batch(keys, todo))
            await asyncio.sleep(0)
        else:
            writes: list[Command] = []
            for start in range(0, len(todo), _YIELD_EVERY):
                writes += [
                    w for e in todo[start : start + _YIELD_EVERY] for w in projection.apply(keys, e)
                ]
                await asyncio.sleep(0)
            commands = _coalesce(writes)
        args = [projection.name, checkpoint, todo[-1].seq, _pack([_words(c) for c in commands])]
        return (scripts.APPLY, [keys.checkpoints], args)

    async def rebuild(self, workspace_id: str, names: Sequence[str] | None = None) -> int:
        """Drop the named read models (all by default) and rebuild them from the log."""
        keys = WorkspaceKeys(workspace_id)
        chosen = [p for p in self.projections if names is None or p.name in names]
        unknown = set(names or ()) - {p.name for p in self.projections}
        if unknown:
            raise ValueError(f"unknown projections: {', '.join(sorted(unknown))}")
        for projection in chosen:
            # The drop goes through the same checkpointed step as any apply: it resets the
            # checkpoint to 0 only if no projector advanced it meanwhile (else: try again).
            applied = False
            while not applied:
                checkpoint = (await self.checkpoints(workspace_id))[projection.name]
                args = [projection.name, checkpoint, 0, *_flatten(projection.drop(keys))]
                _, applied = await scripts.APPLY(self.redis, [keys.checkpoints], args)
        return await self.catch_up(workspace_id)

    # Running per workspace

    def notify(self, workspace_id: str, seq: int) -> None:
        """An event up to ``seq`` was appended: make sure this workspace gets projected."""
        wakeup = self._wakeups.get(workspace_id)
        if wakeup is not None:
            wakeup.set()
        elif self._task_group is not None:
            wakeup = self._wakeups[workspace_id] = asyncio.Event()
            wakeup.set()
            self._task_group.start_soon(self._run_workspace, workspace_id, wakeup)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._task_group = None

    async def _run_workspace(self, workspace_id: str, wakeup: asyncio.Event) -> None:
        try:
            while True:
                with anyio.move_on_after(self.idle_s) as idle:
                    await wakeup.wait()
                if idle.cancelled_caught:
                    return
                wakeup.clear()
                await self._step(workspace_id, wakeup)
        finally:
            self._wakeups.pop(workspace_id, None)

    async def _step(self, workspace_id: str, wakeup: asyncio.Event) -> None:
        try:
            async for reached in self.batches(workspace_id):
                # Published after every batch: under a steady stream of appends, writers
                # waiting for their seq must not wait for the stream to pause.
                async with self._progress:
                    known = self._caught_up.get(workspace_id, 0)
                    self._caught_up[workspace_id] = max(reached, known)
                    self._progress.notify_all()
        except (RedisError, OSError, Unavailable) as exc:
            log.warning("projection.retry", workspace=workspace_id, error=str(exc))
            await anyio.sleep(0.5)
            wakeup.set()

    async def wait_for(self, workspace_id: str, seq: int, wait_s: float) -> bool:
        """Wait until every projection of the workspace has applied ``seq`` (bounded)."""
        if self._caught_up.get(workspace_id, 0) >= seq:
            return True
        if self._task_group is None:
            return await self.catch_up(workspace_id) >= seq
        self.notify(workspace_id, seq)
        with anyio.move_on_after(wait_s):
            async with self._progress:
                await self._progress.wait_for(lambda: self._caught_up.get(workspace_id, 0) >= seq)
                return True
        return False

    def active(self) -> dict[str, int]:
        """Workspaces this process projects, with the seq each has reached."""
        return {ws: self._caught_up.get(ws, 0) for ws in self._wakeups}
