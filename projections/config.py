"""The workspace config read model: the merged config document and its version."""

from typing import Any

import msgspec
from redis.asyncio import Redis

from orchestrator.events import ConfigUpdated, OrchestrationPurged, StoredEvent
from orchestrator.keys import WorkspaceKeys
from projections.base import Command

_decode_config = msgspec.json.Decoder(dict[str, Any]).decode


RELEVANT = frozenset({ConfigUpdated.type, OrchestrationPurged.type})


class ConfigProjection:
    name = "config"

    def apply(self, keys: WorkspaceKeys, event: StoredEvent) -> list[Command]:
        if event.type not in RELEVANT:
            return []  # decided on the type alone: most events are tool calls
        payload = event.decode()
        if isinstance(payload, ConfigUpdated | OrchestrationPurged) and payload.config is not None:
            doc = msgspec.json.encode(payload.config)
            return [("HSET", keys.config, "doc", doc, "version", event.seq)]
        return []

    def drop(self, keys: WorkspaceKeys) -> list[Command]:
        return [("DEL", keys.config)]


async def read_config(redis: Redis, workspace_id: str) -> tuple[dict[str, Any], int]:
    """The config (``{}`` when never set) and the seq of the event that last changed it."""
    doc, version = await redis.hmget(WorkspaceKeys(workspace_id).config, ["doc", "version"])
    return (_decode_config(doc) if doc else {}), int(version or 0)
