"""Live subscriber counts, summed over every API replica.

Each replica reports its own count per workspace with an expiry and refreshes it while it
has subscribers, so a dead replica's count disappears within one expiry.
"""

import anyio
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orchestrator import scripts
from orchestrator.keys import WorkspaceKeys

log = structlog.get_logger(__name__)


class SubscriberCounts:
    def __init__(self, redis: Redis, replica_id: str, ttl_ms: int, every_s: float) -> None:
        self.redis = redis
        self.replica_id = replica_id
        self.ttl_ms = ttl_ms
        self.every_s = every_s
        self._local: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._wakeup = anyio.Event()

    def update(self, workspace_id: str, count: int) -> None:
        """This replica now has ``count`` subscribers in the workspace (reported soon)."""
        if count:
            self._local[workspace_id] = count
        else:
            self._local.pop(workspace_id, None)
        self._dirty.add(workspace_id)
        self._wakeup.set()

    async def total(self, workspace_id: str) -> int:
        keys = WorkspaceKeys(workspace_id)
        return int(await scripts.SUBSCRIBERS(self.redis, [keys.subscribers], ["", 0, 0]))

    async def run(self) -> None:
        try:
            while True:
                with anyio.move_on_after(self.every_s):
                    await self._wakeup.wait()
                self._wakeup = anyio.Event()
                await self._report(self._dirty | set(self._local))
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                # Going away cleanly: withdraw our counts rather than wait for them to expire.
                workspaces = self._dirty | set(self._local)
                self._local.clear()
                await self._report(workspaces)

    async def _report(self, workspaces: set[str]) -> None:
        if not workspaces:
            return
        self._dirty -= workspaces
        calls: list[scripts.Call] = [
            (
                scripts.SUBSCRIBERS,
                [WorkspaceKeys(ws).subscribers],
                [self.replica_id, self._local.get(ws, 0), self.ttl_ms],
            )
            for ws in sorted(workspaces)
        ]
        try:
            await scripts.run_all(self.redis, calls)
        except (RedisError, OSError) as exc:
            self._dirty |= workspaces
            log.warning("subscribers.report_failed", error=str(exc))
