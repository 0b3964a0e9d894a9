"""Import jobs, run in the background of the replica that accepted them.

``begin`` records the job (``import.started``) and starts its task in the importer's task
group; the task fetches the document (clone, read, validate), reporting ``import.progress``
as it goes, then appends the document's events and ``import.completed`` in one append, or
``import.failed`` saying why. A job's terminal event is appended under an idempotency key of
its own, so a job ends once: completed or failed, never both. Its state is the imports read
model, so any replica answers ``GET /import/{jobID}``.
"""

from dataclasses import dataclass
from typing import Any, Literal

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup, TaskStatus

from orchestrator import imports, markdown, repos
from orchestrator.clock import now_ms
from orchestrator.context import Orchestrator
from orchestrator.documents import (
    FORMAT,
    MAX_ENTRIES,
    MAX_PHASES,
    DocumentInvalid,
    PlanDocument,
    validate,
)
from orchestrator.errors import NotFound, TooMany, Unavailable, ValidationFailed
from orchestrator.eventlog import Idempotency
from orchestrator.events import new_event
from orchestrator.ids import mint
from orchestrator.repo_access import Location, RepoAccess, Target, parse
from orchestrator.transfer import ImportJob, ImportSource, Problem
from orchestrator.vault import SnapshotStore

log = structlog.get_logger(__name__)
_decode_json = msgspec.json.Decoder().decode


class JobFailed(Exception):
    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or []


@dataclass(frozen=True)
class Work:
    """What the job imports: a document already read, or where to read it from (the
    repository as checked, its URL with its credentials: only ``shown`` is stored)."""

    document: PlanDocument | None = None
    target: Target | None = None
    snapshot_id: str | None = None


def source_of(given: imports.ImportInput) -> tuple[ImportSource, Location | None]:
    """The job's source as recorded (a repository URL as scheme, host, port and path only),
    and the repository's location; refuses anything but exactly one source."""
    chosen = [n for n in ("repoUrl", "document", "snapshotID") if getattr(given, n) is not None]
    if len(chosen) != 1:
        raise ValidationFailed(
            "give exactly one of repoUrl, document, snapshotID"
            + (f" (got {', '.join(chosen)})" if chosen else ""),
            {"path": "$", "given": chosen},
        )
    if given.repoUrl is not None:
        location = parse(given.repoUrl)
        source = ImportSource(kind="repo", repoUrl=location.shown, ref=given.ref, path=given.path)
        return source, location
    if given.snapshotID is not None:
        return ImportSource(kind="snapshot", snapshotID=given.snapshotID), None
    kind: Literal["json", "markdown"] = "markdown" if isinstance(given.document, str) else "json"
    return ImportSource(kind="document", format=kind), None


def read_document(raw: Any, max_notes: int, root: str = "$") -> PlanDocument:
    """A document sent as decoded JSON (an object) or as Markdown (a string). Slow on a
    large one: run it off the event loop."""
    if isinstance(raw, str):
        return markdown.read(raw, max_notes)
    _bounded(raw, root)
    return validate(raw, max_notes, root)


def _bounded(raw: Any, root: str) -> None:
    """Refuse a document with too many entries or phases before walking every one of them."""
    for name, limit in (("entries", MAX_ENTRIES), ("phases", MAX_PHASES)):
        items = raw.get(name) if isinstance(raw, dict) else None
        if isinstance(items, list) and len(items) > limit:
            message = f"at most {limit} {name}, not {len(items)}"
            raise DocumentInvalid([Problem(path=f"{root}.{name}", message=message)])


def _terminal(job: ImportJob) -> Idempotency:
    """The key a job's completion or failure is appended under: whichever lands first."""
    return Idempotency(operation="import-job", key=job.id, fingerprint="terminal")


class Importer:
    def __init__(self, orch: Orchestrator, store: SnapshotStore) -> None:
        self.orch = orch
        self.store = store
        self.settings = orch.settings
        self.access = RepoAccess(orch.settings)
        self._task_group: TaskGroup | None = None
        self._running: dict[str, int] = {}  # imports per workspace: parsing, or a job's task

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the jobs' tasks for as long as this runs (the app's lifespan)."""
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._task_group = None

    async def begin(
        self, workspace_id: str, given: imports.ImportInput, idem: Idempotency | None
    ) -> bytes:
        """Record a job and start it; ``{"importJobID","todoID"}``. A retry with the same
        Idempotency-Key answers the first job and starts nothing."""
        if self._task_group is None:
            raise Unavailable("the importer is not running")
        source, location = source_of(given)
        earlier = await self.orch.eventlog.recall(workspace_id, idem)
        if earlier is not None:
            return earlier.result
        self._take_slot(workspace_id)
        handed = False  # the slot passes to the job's task, which gives it back
        try:
            work = await self._work(workspace_id, given, location)
            job_id, now = mint("imp"), now_ms()
            result = await self.orch.command(
                workspace_id, lambda plan: imports.decide_start(plan, job_id, source, now), idem
            )
            started: dict[str, Any] = _decode_json(result)
            if started.get("importJobID") != job_id:
                return result  # a concurrent duplicate's: that request runs the job
            job = ImportJob(
                id=job_id, todoID=started["todoID"], source=source, created_at=now, updated_at=now
            )
            if self._task_group is None:  # stopped meanwhile
                await self._fail(workspace_id, job, "the server stopped", [], _terminal(job))
            else:
                name = f"import {job_id}"
                self._task_group.start_soon(self._run, workspace_id, job, work, name=name)
                handed = True
            return result
        finally:
            if not handed:
                self._give_slot(workspace_id)

    def _take_slot(self, workspace_id: str) -> None:
        """Bound the imports a workspace runs at once on this replica: each may parse
        megabytes and clone a repository."""
        limit = self.settings.import_max_concurrent
        if self._running.get(workspace_id, 0) >= limit:
            raise TooMany(
                f"{limit} import(s) already running in this workspace: retry when one has "
                "ended (GET /import/{jobID} shows when)",
                {"limit": limit},
                code="TOO_MANY_IMPORTS",
            )
        self._running[workspace_id] = self._running.get(workspace_id, 0) + 1

    def _give_slot(self, workspace_id: str) -> None:
        left = self._running.pop(workspace_id, 1) - 1
        if left > 0:
            self._running[workspace_id] = left

    async def _work(
        self, workspace_id: str, given: imports.ImportInput, location: Location | None
    ) -> Work:
        """What the job will import, checked before anything is recorded: a repository the
        server may clone, a snapshot the vault has, or a valid document (parsed off the event
        loop)."""
        if location is not None:
            return Work(target=await self.access.check(location))
        if given.snapshotID is not None:
            if await self.store.get(workspace_id, given.snapshotID) is None:
                raise NotFound(
                    f"snapshot {given.snapshotID} is not in the vault",
                    {"snapshotID": given.snapshotID},
                    code="SNAPSHOT_NOT_FOUND",
                )
            return Work(snapshot_id=given.snapshotID)
        max_notes = self.settings.max_memory_notes
        document = await anyio.to_thread.run_sync(
            read_document, given.document, max_notes, "$.document"
        )
        return Work(document=document)

    async def _run(self, workspace_id: str, job: ImportJob, work: Work) -> None:
        try:
            await self._steps(workspace_id, job, work)
        finally:
            self._give_slot(workspace_id)

    async def _steps(self, workspace_id: str, job: ImportJob, work: Work) -> None:
        terminal = _terminal(job)
        try:
            with anyio.fail_after(self.settings.import_timeout_s):
                job, document = await self._fetch(workspace_id, job, work)
                job = await self._progress(workspace_id, job, 80, "importing")
                await self.orch.command(
                    workspace_id,
                    lambda plan: imports.decide_import(plan, document, job, now_ms()),
                    terminal,
                )
        except JobFailed as failure:
            await self._fail(workspace_id, job, failure.message, failure.problems, terminal)
        except TimeoutError:
            message = f"the import took longer than {self.settings.import_timeout_s:g} s"
            await self._fail(workspace_id, job, message, [], terminal)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self._fail(workspace_id, job, "the server stopped", [], terminal)
            raise
        except Exception as exc:  # the job fails; the replica goes on
            log.exception("import.failed", workspace=workspace_id, job=job.id)
            # Not the exception's text: it could quote a URL's secrets or a server's file.
            message = f"internal error ({type(exc).__name__}): the server's log has the details"
            await self._fail(workspace_id, job, message, [], terminal)

    async def _fetch(
        self, workspace_id: str, job: ImportJob, work: Work
    ) -> tuple[ImportJob, PlanDocument]:
        if work.document is not None:
            return job, work.document
        if work.snapshot_id is not None:
            job = await self._progress(workspace_id, job, 20, "reading")
            found = await self.store.get(workspace_id, work.snapshot_id)
            if found is None:
                raise JobFailed(f"snapshot {work.snapshot_id} is not in the vault")
            where = f"snapshot {work.snapshot_id}"
            return job, await self._parsed(found[1], where, "json", foreign=False)
        assert work.target is not None
        job = await self._progress(workspace_id, job, 10, "cloning")
        try:
            fetched = await repos.fetch(
                work.target, job.source.ref, job.source.path, self.settings.import_max_bytes
            )
        except repos.FetchFailed as exc:
            raise JobFailed(str(exc)) from exc
        kind = "markdown" if fetched.name.endswith(".md") else "json"
        source = msgspec.structs.replace(job.source, file=fetched.name, format=kind)
        job = msgspec.structs.replace(job, source=source)
        job = await self._progress(workspace_id, job, 50, "validating")
        where = f"{fetched.name} in {job.source.repoUrl}"
        return job, await self._parsed(fetched.data, where, kind, foreign=True)

    async def _parsed(self, data: bytes, where: str, kind: str, foreign: bool) -> PlanDocument:
        """The document in ``data``, read in a worker thread: a large one takes seconds of
        CPU, which the event loop (and every other request) must not wait out."""
        return await anyio.to_thread.run_sync(self._parse, data, where, kind, foreign)

    def _parse(self, data: bytes, where: str, kind: str, foreign: bool) -> PlanDocument:
        """``foreign``: a file of a repository, which may be no TODO document at all; then
        the error names none of its content (a configuration file's keys, say)."""
        max_notes = self.settings.max_memory_notes
        try:
            if kind == "markdown":
                text = data.decode()
                if foreign and not markdown.is_checklist(text):
                    raise JobFailed(
                        f"{where} is not a TODO document: it has no checklist item "
                        "(`- [ ] ...`) and no orchestrator-todo header"
                    )
                return markdown.read(text, max_notes)
            raw = _decode_json(data)
            if foreign and not (isinstance(raw, dict) and raw.get("format") == FORMAT):
                raise JobFailed(f'{where} is not a TODO document: it has no "format": "{FORMAT}"')
            _bounded(raw, "$")
            return validate(raw, max_notes)
        except UnicodeDecodeError as exc:
            raise JobFailed(f"{where} is not UTF-8 text") from exc
        except msgspec.DecodeError as exc:
            raise JobFailed(f"{where} is not valid JSON: {exc}") from exc
        except DocumentInvalid as invalid:
            message = invalid.message.replace("the document", where, 1)
            message = message.replace("the Markdown checklist", where, 1)
            raise JobFailed(message, invalid.problems) from invalid

    async def _progress(
        self, workspace_id: str, job: ImportJob, progress: int, stage: str
    ) -> ImportJob:
        event = imports.progressed(job, progress, stage, now_ms())
        await self.orch.eventlog.append(workspace_id, [new_event(event)])
        return event.job

    async def _fail(
        self,
        workspace_id: str,
        job: ImportJob,
        message: str,
        problems: list[Problem],
        terminal: Idempotency,
    ) -> None:
        event = imports.failed(job, message, problems, now_ms())
        try:
            # Under the job's terminal key: if it completed after all, this appends nothing.
            await self.orch.eventlog.append(
                workspace_id, [new_event(event)], idempotency=terminal, result=b"failed"
            )
        except Exception as exc:
            log.error("import.fail_unrecorded", workspace=workspace_id, job=job.id, error=str(exc))
