"""The workspace config read model: the merged config document and its version.

A ``config.updated`` carries the patch alone; the projection merges it into the stored
document in Redis, with apply.lua's MERGEPATCH, which gives the text ``merge_patch`` would.
A batch's patches are first composed into as few as do the same, so that a rebuild merges
into the document (a scan of all of it) about once per batch, not once per event."""

from typing import Any

import msgspec
from redis.asyncio import Redis

from orchestrator.events import ConfigUpdated, OrchestrationPurged, StoredEvent
from orchestrator.keys import WorkspaceKeys
from projections.base import Command

_decode_config = msgspec.json.Decoder(dict[str, Any]).decode
_encode = msgspec.json.Encoder().encode

RELEVANT = frozenset({ConfigUpdated.type, OrchestrationPurged.type})


class ConfigProjection:
    name = "config"

    def apply(self, keys: WorkspaceKeys, event: StoredEvent) -> list[Command]:
        return self.apply_batch(keys, [event])

    def apply_batch(self, keys: WorkspaceKeys, events: list[StoredEvent]) -> list[Command]:
        whole: bytes | None = None  # the batch's last whole config
        patches: list[dict[str, Any]] = []  # the patches after it, composed where they can be
        version = 0
        for event in events:
            if event.type not in RELEVANT:
                continue  # decided on the type alone: most events are tool calls
            payload = event.decode()
            if (
                isinstance(payload, ConfigUpdated | OrchestrationPurged)
                and payload.config is not None
            ):
                # A purge, or a config.updated of the old shape: the whole config, as it was
                # (what came before it no longer matters).
                whole, patches, version = _encode(payload.config), [], event.seq
            elif isinstance(payload, ConfigUpdated):
                both = compose(patches[-1], payload.patch) if patches else None
                if both is None:
                    patches.append(payload.patch)
                else:
                    patches[-1] = both
                version = event.seq
        if not version:
            return []
        stamp = ("version", version)
        if whole is not None and not patches:
            return [("HSET", keys.config, "doc", whole, *stamp)]
        writes: list[Command] = [] if whole is None else [("HSET", keys.config, "doc", whole)]
        writes += [("MERGEPATCH", keys.config, "doc", _encode(patch)) for patch in patches]
        return [*writes, ("HSET", keys.config, *stamp)]

    def drop(self, keys: WorkspaceKeys) -> list[Command]:
        return [("DEL", keys.config)]


def compose(first: dict[str, Any], then: dict[str, Any]) -> dict[str, Any] | None:
    """One merge patch that does what ``first`` then ``then`` do, to any target and to the
    order of its members too, or None when no patch can: an object merged into a member
    that ``first`` set to a value (or deleted) replaces it whole, which a patch cannot say
    (its objects merge), and a member deleted and set again moves to the end."""
    composed = dict(first)
    for name, value in then.items():
        if name not in first:
            composed[name] = value
        elif first[name] is None:
            if value is not None:
                return None
        elif isinstance(value, dict):
            if not isinstance(first[name], dict):
                return None
            inner = compose(first[name], value)
            if inner is None:
                return None
            composed[name] = inner
        else:
            composed[name] = value
    return composed


async def read_config(redis: Redis, workspace_id: str) -> tuple[dict[str, Any], int]:
    """The config (``{}`` when never set) and the seq of the event that last changed it."""
    doc, version = await redis.hmget(WorkspaceKeys(workspace_id).config, ["doc", "version"])
    return (_decode_config(doc) if doc else {}), int(version or 0)
