"""API server processes for tests: real uvicorn processes on loopback, on a test Redis."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent

# Fast timers so that tests of expiry and heartbeats finish in seconds.
TEST_ENV = {
    "ORCH_HEARTBEAT_S": "1",
    "ORCH_SUBSCRIBER_REPORT_TTL_MS": "3000",
    "ORCH_SUBSCRIBER_REPORT_EVERY_S": "0.5",
    "ORCH_QUESTION_SWEEP_S": "0.2",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    serve_args: tuple[str, ...] = ()  # more `orchestrator serve` options: ("--loop", "asyncio")

    def __init__(self, redis_url: str | None, log_path: Path, **env: str) -> None:
        self.redis_url = redis_url
        self.log_path = log_path
        self.env = {**TEST_ENV, **env}
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def workspace_url(self, workspace_id: str) -> str:
        return f"{self.base_url}/api/v1/workspaces/{workspace_id}/orchestration"

    def start(self, timeout: float = 15.0) -> None:
        env = {**os.environ, **self.env}
        env.pop("REDIS_URL", None)
        if self.redis_url is not None:
            env["REDIS_URL"] = self.redis_url
        command = [sys.executable, "-m", "orchestrator", "serve", "--host", HOST]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port), *self.serve_args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is not None:
            end(process, sig)


def end(process: "subprocess.Popen[bytes]", sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal a server process and wait for it; SIGKILL it if it takes over 15 s."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
