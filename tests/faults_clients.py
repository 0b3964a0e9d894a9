"""Clients for fault tests: they keep going through the faults, as real ones would.

``Follower`` reads an SSE route like a browser's EventSource: when the stream breaks or ends it
reconnects with ``Last-Event-ID`` (to the next replica when one refuses the connection), and
keeps every event it was sent, so a test can check each seq arrived exactly once, in order.
``Writer`` records tool calls with an ``Idempotency-Key`` each and retries a 503 or a broken
connection with the same key (on the next replica), as the API asks of its clients.
"""

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.servers import ServerProcess
from tests.sse_client import Frame, Parser

CALL = {"tool": "fs.write", "sessionID": "s1", "agentName": "agent-1", "status": "ok"}
# Short reconnect and retry pauses (the servers ask for 2 s and 1 s) keep the tests quick.
PAUSE_S = 0.05
# Heartbeats come every second on test servers: a stream silent for longer is dead.
READ_TIMEOUT_S = 3.0


def replica_id(server: ServerProcess) -> str:
    """The replica id a server logged at start."""
    for line in server.log_path.read_text().splitlines():
        if '"orchestrator.started"' in line:
            for part in line.split('"'):
                if part.startswith("rep_"):
                    return part
    raise AssertionError(f"no replica id in {server.log_path}")


def rss_kb(pid: int) -> int:
    """A process's resident set size, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@dataclass
class Follower:
    """A resuming SSE reader on ``path`` (``/events`` or ``/log/stream``) of the workspace
    URLs in ``bases``, in a thread of its own, from ``Last-Event-ID: last_id``."""

    bases: list[str]
    path: str
    last_id: str = "0"
    seqs: list[int] = field(default_factory=list)
    control: list[Frame] = field(default_factory=list)  # reset and reconnect frames
    connects: int = 0  # responses that started with a 200
    retry_frames: int = 0  # `retry:` frames received (one per response)
    ends: Counter[str] = field(default_factory=Counter)  # how each response ended
    until_seq: int | None = None  # stop once an event with this seq (or beyond) arrived
    _base: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "Follower":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def wait(self, seq: int, timeout: float) -> None:
        """Wait until an event with seq >= ``seq`` has arrived, then stop."""
        self.until_seq = seq
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), (
            f"{self.path}: no seq {seq} within {timeout} s; last {self.last_id}, "
            f"{len(self.seqs)} events, ends {dict(self.ends)}"
        )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(READ_TIMEOUT_S + 2)

    @property
    def base(self) -> str:
        return self.bases[self._base % len(self.bases)]

    def _done(self) -> bool:
        if self._stop.is_set():
            return True
        return self.until_seq is not None and bool(self.seqs) and self.seqs[-1] >= self.until_seq

    def _run(self) -> None:
        deadline = time.monotonic() + 120  # never outlive the test run
        timeout = httpx.Timeout(READ_TIMEOUT_S, connect=1.0)
        with httpx.Client(timeout=timeout) as client:
            while not self._done() and time.monotonic() < deadline:
                try:
                    self.ends[self._read(client)] += 1
                except httpx.ConnectError:
                    self.ends["refused"] += 1
                    self._base += 1  # that replica is gone: the next one
                except httpx.TransportError as exc:
                    self.ends[type(exc).__name__] += 1
                if not self._done():
                    time.sleep(PAUSE_S)

    def _read(self, client: httpx.Client) -> str:
        headers = {"Last-Event-ID": self.last_id}
        with client.stream("GET", self.base + self.path, headers=headers) as response:
            if response.status_code != 200:
                response.read()
                return f"status {response.status_code}"
            self.connects += 1
            parser = Parser()
            for chunk in response.iter_raw():
                for frame in parser.feed(chunk):
                    if self._take(frame):
                        return "reconnect frame"
                if self._done():
                    return "stopped"
            return "end"

    def _take(self, frame: Frame) -> bool:
        """Keep one frame; True when it tells the client to reconnect."""
        if frame.retry is not None:
            self.retry_frames += 1
        if not frame.is_event:
            return False
        self.last_id = str(frame.seq)
        if frame.event in ("reset", "reconnect"):
            self.control.append(frame)
            return frame.event == "reconnect"
        self.seqs.append(frame.seq)
        return False


@dataclass
class Writer:
    """Records ``requests`` batches of ``batch`` tool calls, one Idempotency-Key per batch,
    retrying each until it is answered 201; in a thread of its own."""

    name: str
    bases: list[str]
    requests: int
    batch: int = 1
    title: str | None = None
    pause_s: float = 0.0  # between two requests
    seqs: dict[str, list[int]] = field(default_factory=dict)  # call id -> seqs answered
    statuses: Counter[str] = field(default_factory=Counter)  # every answer (or error) seen
    unexpected: list[str] = field(default_factory=list)
    retries: int = 0
    _base: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "Writer":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"writer {self.name} still writing: {self.statuses}"

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    @property
    def written(self) -> int:
        return len(self.seqs)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            for n in range(self.requests):
                if self._stop.is_set():
                    return
                calls = [self._call(n, i) for i in range(self.batch)]
                items = self._post(client, f"{self.name}-{n}", {"items": calls})
                if items is None:
                    return
                for call, item in zip(calls, items, strict=True):
                    assert item["callID"] == call["callID"]
                    self.seqs.setdefault(call["callID"], []).append(item["seq"])
                time.sleep(self.pause_s)

    def _call(self, n: int, i: int) -> dict[str, Any]:
        call: dict[str, Any] = {**CALL, "callID": f"call-{self.name}-{n}-{i}"}
        if self.title is not None:
            call["title"] = self.title
        return call

    def _post(self, client: httpx.Client, key: str, body: Any) -> list[dict[str, Any]] | None:
        deadline = time.monotonic() + 30
        headers = {"Idempotency-Key": key}
        # Not stopped half-way: a write whose outcome is unknown is retried until known.
        while time.monotonic() < deadline:
            try:
                response = client.post(self.bases[self._base] + "/log", json=body, headers=headers)
            except httpx.TransportError as exc:
                # The replica died mid-request, or is gone: whether the write landed is
                # unknown, so the same key goes to the next replica.
                self.statuses[type(exc).__name__] += 1
                self._base = (self._base + 1) % len(self.bases)
            else:
                self.statuses[str(response.status_code)] += 1
                if response.status_code == 201:
                    items: list[dict[str, Any]] = response.json()["items"]
                    return items
                if response.status_code != 503 or response.headers.get("retry-after") != "1":
                    self.unexpected.append(f"{response.status_code} {response.text[:300]}")
                    return None
            self.retries += 1
            time.sleep(PAUSE_S)
        self.unexpected.append(f"{key}: not written within 30 s")
        return None
