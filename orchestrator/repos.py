"""Fetching a TODO document from a git repository.

The repository is cloned shallow, without a checkout, into a temporary directory, and the
document is read from the commit's tree with ``git cat-file``: nothing of the repository is
written out as files, so no symlink in it can point a read outside it. git runs with no
terminal prompts, with only the protocols the checked target allows (``ext::`` never), with
the options that pin it to the addresses checked (``orchestrator/repo_access.py``), and is
killed when the job's time runs out.

git's own messages are logged, not returned: they can quote a file of the server (a local
path that is not a repository), or tell a refused port from one that answered, so the job's
error is one of a few fixed sentences naming only the URL as recorded.
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
import structlog

from orchestrator.repo_access import Target

log = structlog.get_logger(__name__)

USERS = re.compile(r"://[^/@\s'\"]*@")
SECRETS = re.compile(r"[?#][^\s'\"]*")

# Searched in this order; the first that exists is the document.
DOCUMENT_NAMES = (
    ".orchestrator/todo.json",
    ".orchestrator/todo.md",
    "TODO.json",
    "todo.json",
    "TODO.md",
)


class FetchFailed(Exception):
    """The repository could not be read, or holds no document; the message says which."""


@dataclass(frozen=True)
class Fetched:
    name: str  # the file's path in the repository
    data: bytes


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


def _logged(target: Target, step: str, stderr: bytes) -> None:
    """git's reason, for the operator's log only, without what a URL may carry: git quotes
    URLs in more than one way (with a slash added, a user dropped), so every user, query
    and fragment goes."""
    reason = stderr.decode(errors="replace").replace(target.url, target.shown)
    reason = SECRETS.sub("", USERS.sub("://", reason))
    log.info("import.git_failed", step=step, url=target.shown, reason=reason[-1000:])


async def fetch(target: Target, ref: str | None, path: str | None, max_bytes: int) -> Fetched:
    """The document of the repository ``target`` (``path``, or the first of
    ``DOCUMENT_NAMES`` there is). Cancel the caller's scope to stop it (git is killed)."""
    work = Path(await anyio.to_thread.run_sync(tempfile.mkdtemp, "", "orch-import-"))
    try:
        env = _env(target.protocols)
        options = [arg for option in target.config for arg in ("-c", option)]
        clone = [*options, "clone", "--depth", "1", "--no-checkout", "--no-tags", "--quiet"]
        if ref is not None:
            clone += ["--branch", ref, "--single-branch"]
        code, _, err = await _git([*clone, "--", target.url, str(work / "repo")], env)
        if code != 0:
            _logged(target, "clone", err)
            what = "the URL and ref" if ref is not None else "the URL"
            raise FetchFailed(
                f"could not clone {target.shown}: check {what}, and that the repository is "
                "reachable from the server and readable without a password prompt"
            )
        return await _find(work / "repo", target, path, env, max_bytes)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shutil.rmtree, work, True)


async def _find(
    repo: Path, target: Target, path: str | None, env: dict[str, str], max_bytes: int
) -> Fetched:
    url = target.shown
    code, _, _ = await _git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], env, repo)
    if code != 0:
        raise FetchFailed(f"{url} has no commits, so no TODO document")
    for name in (path,) if path else DOCUMENT_NAMES:
        code, kind, _ = await _git(["cat-file", "-t", f"HEAD:{name}"], env, repo)
        if code != 0 or kind.strip() != b"blob":
            continue
        _, size, _ = await _git(["cat-file", "-s", f"HEAD:{name}"], env, repo)
        if int(size.strip() or 0) > max_bytes:
            raise FetchFailed(f"{name} in {url} is over {max_bytes} bytes")
        code, data, err = await _git(["cat-file", "blob", f"HEAD:{name}"], env, repo)
        if code != 0:
            _logged(target, "read", err)
            raise FetchFailed(f"could not read {name} in {url}")
        return Fetched(name, data)
    if path:
        raise FetchFailed(f"{url} has no file {path}")
    raise FetchFailed(f"{url} has no TODO document: looked for {', '.join(DOCUMENT_NAMES)}")
