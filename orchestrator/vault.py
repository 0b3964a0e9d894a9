"""The vault: versioned snapshots of a workspace's TODO document, content-addressed.

Each sync stores the document under its digest (once, however many snapshots have it) and a
snapshot record numbered 1, 2, ... per workspace; a sync whose document has the digest of the
latest snapshot stores nothing and answers that snapshot. Where snapshots live is pluggable:
Redis (the default) or a directory (``ORCH_VAULT_DIR``). Snapshots outlive a purge: they are
what a purged workspace is restored from.
"""

import fcntl
import os
import tempfile
from pathlib import Path
from typing import Protocol

import anyio
import msgspec
from redis.asyncio import Redis
from redis.exceptions import WatchError

from orchestrator.documents import PlanDocument, canonical, digest
from orchestrator.eventlog import EventLog, Idempotency
from orchestrator.events import VaultSynced, new_event
from orchestrator.ids import is_valid_id, mint
from orchestrator.keys import WorkspaceKeys
from orchestrator.replies import as_bytes
from orchestrator.settings import Settings
from orchestrator.transfer import Snapshot

_encode = msgspec.json.Encoder().encode
_decode_snapshot = msgspec.json.Decoder(Snapshot).decode


class SnapshotStore(Protocol):
    name: str

    async def put(
        self, workspace_id: str, document: bytes, draft: Snapshot
    ) -> tuple[Snapshot, bool]:
        """Store ``draft`` as the next version with ``document`` (its canonical JSON), unless
        the latest snapshot has the same digest: then that one, and False."""
        ...

    async def snapshots(self, workspace_id: str) -> list[Snapshot]:
        """Every snapshot, oldest first."""
        ...

    async def get(self, workspace_id: str, snapshot_id: str) -> tuple[Snapshot, bytes] | None:
        """The snapshot and its document's canonical JSON."""
        ...


class RedisSnapshots:
    """Snapshots in the workspace's own keys (one Cluster slot): a WATCH on the order list
    makes "compare with the latest, then add" atomic."""

    name = "redis"

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def put(
        self, workspace_id: str, document: bytes, draft: Snapshot
    ) -> tuple[Snapshot, bool]:
        keys = WorkspaceKeys(workspace_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(keys.vault_order)
                    count = await pipe.llen(keys.vault_order)
                    last_id = await pipe.lindex(keys.vault_order, -1)
                    if last_id is not None:
                        last = _decode_snapshot(
                            as_bytes(await pipe.hget(keys.vault_snapshots, last_id))
                        )
                        if last.digest == draft.digest:
                            return last, False
                    snapshot = msgspec.structs.replace(draft, version=int(count) + 1)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hsetnx(keys.vault_documents, draft.digest, document)
                    pipe.hset(keys.vault_snapshots, snapshot.id, _encode(snapshot))
                    pipe.rpush(keys.vault_order, snapshot.id)
                    await pipe.execute()
                    return snapshot, True
                except WatchError:
                    continue

    async def snapshots(self, workspace_id: str) -> list[Snapshot]:
        keys = WorkspaceKeys(workspace_id)
        ids = await self.redis.lrange(keys.vault_order, 0, -1)
        if not ids:
            return []
        raw = await self.redis.hmget(keys.vault_snapshots, ids)
        return [_decode_snapshot(r) for r in raw if r is not None]

    async def get(self, workspace_id: str, snapshot_id: str) -> tuple[Snapshot, bytes] | None:
        keys = WorkspaceKeys(workspace_id)
        raw = await self.redis.hget(keys.vault_snapshots, snapshot_id)
        if raw is None:
            return None
        snapshot = _decode_snapshot(raw)
        document = await self.redis.hget(keys.vault_documents, snapshot.digest)
        return None if document is None else (snapshot, as_bytes(document))


class DirectorySnapshots:
    """Snapshots as files, one directory per workspace:

        <root>/<workspaceID>/documents/<sha256 hex>.json       the canonical JSON, once
        <root>/<workspaceID>/snapshots/<version>-<id>.json     each snapshot record

    A sync holds an exclusive ``flock`` on ``<root>/<workspaceID>/.lock`` (replicas on one
    host, or a file system with working locks); files are written whole, then renamed.
    """

    name = "directory"

    def __init__(self, root: Path) -> None:
        self.root = root

    async def put(
        self, workspace_id: str, document: bytes, draft: Snapshot
    ) -> tuple[Snapshot, bool]:
        return await anyio.to_thread.run_sync(self._put, workspace_id, document, draft)

    async def snapshots(self, workspace_id: str) -> list[Snapshot]:
        return await anyio.to_thread.run_sync(self._snapshots, workspace_id)

    async def get(self, workspace_id: str, snapshot_id: str) -> tuple[Snapshot, bytes] | None:
        return await anyio.to_thread.run_sync(self._get, workspace_id, snapshot_id)

    def _dir(self, workspace_id: str) -> Path:
        if not is_valid_id(workspace_id):  # a safe path segment, and nothing else
            raise ValueError(f"invalid workspace id {workspace_id!r}")
        return self.root / workspace_id

    def _records(self, workspace_id: str) -> list[Path]:
        return sorted((self._dir(workspace_id) / "snapshots").glob("*.json"))

    def _put(self, workspace_id: str, document: bytes, draft: Snapshot) -> tuple[Snapshot, bool]:
        base = self._dir(workspace_id)
        (base / "snapshots").mkdir(parents=True, exist_ok=True)
        (base / "documents").mkdir(exist_ok=True)
        with (base / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = self._records(workspace_id)
            last = _decode_snapshot(records[-1].read_bytes()) if records else None
            if last is not None and last.digest == draft.digest:
                return last, False
            stored = base / "documents" / f"{draft.digest.removeprefix('sha256:')}.json"
            if not stored.exists():
                _write(stored, document)
            snapshot = msgspec.structs.replace(draft, version=(last.version if last else 0) + 1)
            _write(
                base / "snapshots" / f"{snapshot.version:010d}-{snapshot.id}.json",
                _encode(snapshot),
            )
            return snapshot, True

    def _snapshots(self, workspace_id: str) -> list[Snapshot]:
        return [_decode_snapshot(path.read_bytes()) for path in self._records(workspace_id)]

    def _get(self, workspace_id: str, snapshot_id: str) -> tuple[Snapshot, bytes] | None:
        if not is_valid_id(snapshot_id):  # an id, not a glob pattern or a path
            return None
        found = list((self._dir(workspace_id) / "snapshots").glob(f"*-{snapshot_id}.json"))
        if not found:
            return None
        snapshot = _decode_snapshot(found[0].read_bytes())
        stored = (
            self._dir(workspace_id)
            / "documents"
            / f"{snapshot.digest.removeprefix('sha256:')}.json"
        )
        return (snapshot, stored.read_bytes()) if stored.exists() else None


def _write(path: Path, data: bytes) -> None:
    """Write whole or not at all: a temporary file in the same directory, then a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def store_for(settings: Settings, redis: Redis) -> SnapshotStore:
    if settings.vault_dir:
        return DirectorySnapshots(Path(settings.vault_dir))
    return RedisSnapshots(redis)


async def sync(
    eventlog: EventLog,
    store: SnapshotStore,
    workspace_id: str,
    document: PlanDocument,
    meta: tuple[str | None, int],
    idem: Idempotency | None,
    now: int,
) -> bytes:
    """Store the document as a snapshot unless the latest one has it; ``{"snapshot",
    "created"}`` as JSON. A new snapshot emits ``vault.synced``. ``meta`` is the TODO's id
    and version the document was taken at."""
    earlier = await eventlog.recall(workspace_id, idem)
    if earlier is not None:
        return earlier.result
    body = canonical(document)
    draft = Snapshot(
        id=mint("snap"),
        version=0,
        digest=digest(body),
        created_at=now,
        todoID=meta[0],
        todo_version=meta[1],
        entries=len(document.entries),
        phases=len(document.phases),
        bytes=len(body),
    )
    snapshot, created = await store.put(workspace_id, body, draft)
    result = _encode({"snapshot": snapshot, "created": created})
    if not created:
        return result
    event = new_event(VaultSynced(snapshot=snapshot, backend=store.name))
    appended = await eventlog.append(workspace_id, [event], idempotency=idem, result=result)
    return appended.result
