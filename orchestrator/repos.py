"""Fetching a TODO document from a git repository.

The repository is cloned shallow, without a checkout, into a temporary directory, and the
document is read from the commit's tree with ``git cat-file``: nothing of the repository is
written out as files, so no symlink in it can point a read outside it. git runs with no
terminal prompts, with only the protocols ``ORCH_IMPORT_PROTOCOLS`` allows (``ext::`` never),
and is killed when the job's time runs out.
"""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc

# Searched in this order; the first that exists is the document.
DOCUMENT_NAMES = (
    ".orchestrator/todo.json",
    ".orchestrator/todo.md",
    "TODO.json",
    "todo.json",
    "TODO.md",
)
CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


class FetchFailed(Exception):
    """The repository could not be read, or holds no document; the message says which."""


@dataclass(frozen=True)
class Fetched:
    name: str  # the file's path in the repository
    data: bytes


def redact(url: str) -> str:
    """The URL without the user and password it may carry (they never reach an event)."""
    return CREDENTIALS.sub("***@", url)


def _env(protocols: str) -> dict[str, str]:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",  # fail rather than wait for a password
        "GIT_ALLOW_PROTOCOL": protocols,
        "GIT_LFS_SKIP_SMUDGE": "1",
        "LC_ALL": "C",  # messages in English, whatever the server's locale
    }
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


async def _git(
    args: list[str], env: dict[str, str], cwd: Path | None = None
) -> tuple[int, bytes, bytes]:
    """Run git in a process group of its own, which is killed whole if the caller is
    cancelled: git leaves the talking to helpers (``git-remote-http``, ssh) that would
    otherwise hang on after it."""
    try:
        process = await anyio.open_process(
            ["git", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )
    except FileNotFoundError as exc:
        raise FetchFailed(
            "git is not installed on the server: no repository can be imported"
        ) from exc
    output: dict[int, bytes] = {}

    async def drain(stream: anyio.abc.ByteReceiveStream | None, index: int) -> None:
        chunks = [chunk async for chunk in stream] if stream is not None else []
        output[index] = b"".join(chunks)

    try:
        async with process, anyio.create_task_group() as tg:
            tg.start_soon(drain, process.stdout, 1)
            tg.start_soon(drain, process.stderr, 2)
            await process.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        raise
    return process.returncode or 0, output.get(1, b""), output.get(2, b"")


def _reason(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("warning:", "Cloning into"))]
    return redact(" ".join(useful or lines)[-500:]) or "git gave no reason"


async def fetch(
    url: str, ref: str | None, path: str | None, protocols: str, max_bytes: int
) -> Fetched:
    """The document of the repository at ``url`` (``path``, or the first of
    ``DOCUMENT_NAMES`` there is). Cancel the caller's scope to stop it (git is killed)."""
    work = Path(await anyio.to_thread.run_sync(tempfile.mkdtemp, "", "orch-import-"))
    try:
        env = _env(protocols)
        clone = ["clone", "--depth", "1", "--no-checkout", "--no-tags", "--quiet"]
        if ref is not None:
            clone += ["--branch", ref, "--single-branch"]
        code, _, err = await _git([*clone, "--", url, str(work / "repo")], env)
        if code != 0:
            raise FetchFailed(f"could not clone {redact(url)}: {_reason(err)}")
        return await _find(work / "repo", url, path, env, max_bytes)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shutil.rmtree, work, True)


async def _find(
    repo: Path, url: str, path: str | None, env: dict[str, str], max_bytes: int
) -> Fetched:
    code, _, _ = await _git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], env, repo)
    if code != 0:
        raise FetchFailed(f"{redact(url)} has no commits, so no TODO document")
    for name in (path,) if path else DOCUMENT_NAMES:
        code, kind, _ = await _git(["cat-file", "-t", f"HEAD:{name}"], env, repo)
        if code != 0 or kind.strip() != b"blob":
            continue
        _, size, _ = await _git(["cat-file", "-s", f"HEAD:{name}"], env, repo)
        if int(size.strip() or 0) > max_bytes:
            raise FetchFailed(f"{name} in {redact(url)} is over {max_bytes} bytes")
        code, data, err = await _git(["cat-file", "blob", f"HEAD:{name}"], env, repo)
        if code != 0:
            raise FetchFailed(f"could not read {name} in {redact(url)}: {_reason(err)}")
        return Fetched(name, data)
    if path:
        raise FetchFailed(f"{redact(url)} has no file {path}")
    raise FetchFailed(f"{redact(url)} has no TODO document: looked for {', '.join(DOCUMENT_NAMES)}")
