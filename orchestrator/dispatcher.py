"""The dispatcher: one replica per workspace runs the executor's cycle.

Every replica walks the workspaces whose executor was started (``keys.EXECUTORS``) each
tick. A Redis lease with an expiry makes one replica the dispatcher of a workspace; it
renews the lease each tick, and when it dies another replica takes over within one lease
period. Two dispatchers overlapping for a moment still never dispatch an entry twice: each
cycle appends expecting the plan version it decided on.
"""

from collections.abc import Iterable

import anyio
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orchestrator import scripts
from orchestrator.clock import now_ms
from orchestrator.context import Orchestrator
from orchestrator.executor import decide_cycle
from orchestrator.keys import EXECUTORS, WorkspaceKeys
from orchestrator.model import ACTIVE, Plan
from orchestrator.replies import as_str

log = structlog.get_logger(__name__)
LEASE = scripts.Script.load("dispatcher")


def idle(plan: Plan) -> bool:
    """Nothing for a dispatcher to do: stopped, no lease to expire, no work handed out."""
    return (
        plan.executor.status == "stopped"
        and not plan.leases
        and not any(e.status in ACTIVE for e in plan.entries.values())
    )


class Dispatcher:
    def __init__(self, orch: Orchestrator, redis: Redis, replica_id: str) -> None:
        self.orch = orch
        self.redis = redis
        self.replica_id = replica_id
        self.leading: set[str] = set()  # workspaces this replica dispatches now

    async def register(self, workspace_id: str) -> None:
        """The workspace's executor was started: have the dispatchers look after it."""
        await self.redis.sadd(EXECUTORS, workspace_id)

    async def holder(self, workspace_id: str) -> str | None:
        raw = await self.redis.get(WorkspaceKeys(workspace_id).dispatcher)
        return None if raw is None else as_str(raw)

    async def lead(self, workspace_id: str) -> bool:
        period = self.orch.settings.dispatcher_lease_ms
        key = WorkspaceKeys(workspace_id).dispatcher
        held = bool(await LEASE(self.redis, [key], [self.replica_id, period]))
        (self.leading.add if held else self.leading.discard)(workspace_id)
        return held

    async def tick(self, workspaces: Iterable[str]) -> None:
        for ws in workspaces:
            try:
                if await self.lead(ws):
                    await self.cycle(ws)
            except Exception as exc:  # keep dispatching the others; a failure is logged
                log.warning("dispatcher.cycle_failed", workspace=ws, error=str(exc))

    async def cycle(self, workspace_id: str) -> None:
        limits = self.orch.settings.limits
        await self.orch.command(workspace_id, lambda plan: decide_cycle(plan, now_ms(), limits))
        if idle(await self.orch.models.plan(workspace_id)):
            await self.retire(workspace_id)

    async def retire(self, workspace_id: str) -> None:
        """Stop walking an idle workspace, unless it woke up meanwhile.

        A start appends its event before it registers the workspace: if that append came
        before the second look below, this sees it and registers again; if after, the
        start's own registration comes after this removal.
        """
        await self.redis.srem(EXECUTORS, workspace_id)
        if not idle(await self.orch.models.plan(workspace_id)):
            await self.register(workspace_id)
        else:
            await LEASE(
                self.redis, [WorkspaceKeys(workspace_id).dispatcher], [self.replica_id, "0"]
            )
            self.leading.discard(workspace_id)

    async def run(self) -> None:
        while True:
            try:
                members = await self.redis.smembers(EXECUTORS)
            except (RedisError, OSError) as exc:  # Redis is down: try again next tick
                log.warning("dispatcher.redis_error", error=str(exc))
            else:
                await self.tick(sorted(as_str(m) for m in members))
            await anyio.sleep(self.orch.settings.dispatch_tick_s)

    async def release(self) -> None:
        """Hand over the workspaces this replica leads (on shutdown), so that another replica
        takes them at its next tick instead of after the lease period."""
        try:
            for ws in list(self.leading):
                await LEASE(self.redis, [WorkspaceKeys(ws).dispatcher], [self.replica_id, "0"])
        except (RedisError, OSError) as exc:  # Redis is down: the leases expire by themselves
            log.warning("dispatcher.release_failed", error=str(exc))
        self.leading.clear()
