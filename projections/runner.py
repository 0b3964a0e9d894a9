"""The projector: feeds events, in seq order, to every projection of a workspace.

Each batch of a projection's writes is applied by one Lua script together with its
checkpoint, and only if the checkpoint is still the one read before the batch. So replaying,
crashing mid-way, or several replicas projecting the same workspace at once never applies an
event twice or skips one. Projection runs where events are appended: an append in this
process wakes the workspace's projector task, which catches up from the checkpoint.
"""

import asyncio
from collections.abc import Sequence
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
from projections.base import Command, Projection, Word
from projections.config import ConfigProjection
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
    ]


_pack = msgspec.msgpack.Encoder().encode
# Commands that only add to one key, taking any number of (field or score, member) pairs: a
# run of them on one key can be merged without changing the result.
_ADDITIVE = {"HSET", "ZADD", "SADD"}
_MAX_WORDS = 4000  # Lua's unpack() returns at most 8000 values


def _coalesce(commands: list[Command]) -> list[list[Word]]:
    """Merge additive commands on the same key (between other commands) into one each."""
    merged: list[list[Word]] = []
    open_runs: dict[tuple[Word, Word], list[Word]] = {}
    for command in commands:
        verb = command[0]
        if verb not in _ADDITIVE or (verb == "ZADD" and isinstance(command[2], str)):
            open_runs.clear()  # a barrier (DEL, ZREM, ZADD with flags...): keep order around it
            merged.append(list(command))
            continue
        run = open_runs.get((verb, command[1]))
        if run is None or len(run) > _MAX_WORDS:
            run = open_runs[(verb, command[1])] = list(command)
            merged.append(run)
        else:
            run.extend(command[2:])
    return merged


def _word(word: Word) -> object:
    # Lua's cmsgpack has no binary type: bytes travel as a msgpack str32, byte for byte.
    if isinstance(word, bytes):
        return msgspec.Raw(b"\xdb" + len(word).to_bytes(4, "big") + word)
    return word


def _flatten(commands: list[Command]) -> list[Any]:
    """The writes as one msgpack argument for apply.lua. One argument per word cost more in
    redis-py (which packs each in Python) than the projection itself."""
    return [_pack([[_word(w) for w in command] for command in _coalesce(commands)])]


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
        while True:
            reached, more = await self.advance(workspace_id)
            if not more:
                return reached

    async def advance(self, workspace_id: str) -> tuple[int, bool]:
        """Apply one batch; return the seq every projection has reached, and whether there
        may be more to apply."""
        keys = WorkspaceKeys(workspace_id)
        checkpoints = await self.checkpoints(workspace_id)
        low = min(checkpoints.values())
        events = await self.eventlog.read(workspace_id, low, self.batch)
        if not events:
            return low, False
        if events[0].seq > low + 1 and events[0].type != OrchestrationPurged.type:
            # Trimmed before it was projected: the read models miss these events.
            log.error("projection.gap", workspace=workspace_id, after=low, next=events[0].seq)
        reached = dict(checkpoints)
        calls = {
            p.name: call
            for p in self.projections
            if (call := self._apply_call(keys, p, checkpoints[p.name], events)) is not None
        }
        replies = await scripts.run_all(self.redis, list(calls.values()))  # one round trip
        for name, reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            reached[name] = int(reply[0])  # ours, or the checkpoint another projector reached
        return min(reached.values()), True

    def _apply_call(
        self,
        keys: WorkspaceKeys,
        projection: Projection,
        checkpoint: int,
        events: list[StoredEvent],
    ) -> scripts.Call | None:
        todo = [e for e in events if e.seq > checkpoint]
        if not todo:
            return None
        writes = [w for e in todo for w in projection.apply(keys, e)]
        args = [projection.name, checkpoint, todo[-1].seq, *_flatten(writes)]
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
        more = True
        while more:
            try:
                reached, more = await self.advance(workspace_id)
            except (RedisError, OSError, Unavailable) as exc:
                log.warning("projection.retry", workspace=workspace_id, error=str(exc))
                await anyio.sleep(0.5)
                wakeup.set()
                return
            # Published after every batch: under a steady stream of appends, writers waiting
            # for their seq must not wait for the stream to pause.
            async with self._progress:
                known = self._caught_up.get(workspace_id, 0)
                self._caught_up[workspace_id] = max(reached, known)
                self._progress.notify_all()

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
