"""Workspace config: a JSON object changed by JSON Merge Patch (RFC 7396)."""

from typing import Any

import msgspec

from orchestrator.context import Orchestrator
from orchestrator.errors import TooLarge
from orchestrator.eventlog import Idempotency
from orchestrator.events import ConfigUpdated, encode, new_event

_decode_config = msgspec.json.Decoder(dict[str, Any]).decode


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = merge_patch(merged.get(name), value)
    return merged


def check_size(current: dict[str, Any], merged: bytes, max_bytes: int) -> None:
    """A config may not grow past ``max_bytes`` of JSON. One already past it (the cap was
    lowered) may still shrink, so that it can be brought back under."""
    if len(merged) > max_bytes and len(merged) > len(encode(current)):
        raise TooLarge(
            f"the config would be {len(merged)} bytes of JSON, over the cap of {max_bytes} "
            "(ORCH_MAX_CONFIG_BYTES); delete what is no longer needed with null",
            {"size": len(merged), "max_bytes": max_bytes},
            code="CONFIG_TOO_LARGE",
        )


async def get_config(orch: Orchestrator, workspace_id: str) -> dict[str, Any]:
    await orch.models.current(workspace_id)
    config, _ = await orch.models.config(workspace_id)
    return config


async def update_config(
    orch: Orchestrator, workspace_id: str, patch: dict[str, Any], idem: Idempotency | None
) -> dict[str, Any]:
    """Merge ``patch`` into the config; returns the merged config. Emits ``config.updated``,
    which records the patch alone: the projection merges it as this does."""
    earlier = await orch.eventlog.recall(workspace_id, idem)
    if earlier is not None:
        return _decode_config(earlier.result)

    async def attempt() -> dict[str, Any]:
        current, version = await orch.models.config(workspace_id)
        merged: dict[str, Any] = merge_patch(current, patch)
        encoded = encode(merged)
        check_size(current, encoded, orch.settings.max_config_bytes)
        appended = await orch.eventlog.append(
            workspace_id,
            [new_event(ConfigUpdated(patch=patch), "config")],
            expect={"config": version},
            idempotency=idem,
            result=encoded if idem is not None else b"",  # kept only for a repeat of the key
        )
        await orch.models.wait_for(workspace_id, appended.last_seq)
        return _decode_config(appended.result) if appended.duplicate else merged

    return await orch.decide(workspace_id, "config", attempt)
