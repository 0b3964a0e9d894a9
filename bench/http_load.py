"""An HTTP/1.1 load generator: ``wrk`` when installed, else this module as a process.

The fallback keeps N keep-alive connections busy with one request each at a time (like wrk)
and prints ``{"requests", "seconds", "latencies_ms"}`` as JSON.
"""

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from bench.harness import ROOT


class Load(msgspec.Struct):
    tool: str  # "wrk" or "python"
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def run(url: str, body: bytes, seconds: float, connections: int) -> Load:
    if shutil.which("wrk"):
        return _wrk(url, body, seconds, connections)
    out = subprocess.run(
        [sys.executable, "-m", "bench.http_load", url, str(seconds), str(connections)],
        input=body,
        capture_output=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return msgspec.json.decode(out, type=Load)


def _wrk(url: str, body: bytes, seconds: float, connections: int) -> Load:
    script = Path(ROOT / "bench" / ".post.lua")
    escaped = body.decode().replace("\\", "\\\\").replace('"', '\\"')
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{escaped}"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    script.unlink()
    return _parse_wrk(out)


def _ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def _parse_wrk(out: str) -> Load:
    rate, p50, p99, errors = 0.0, 0.0, 0.0, 0
    for line in out.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            rate = float(words[1])
        elif words[:1] == ["50%"]:
            p50 = _ms(words[1])
        elif words[:1] == ["99%"]:
            p99 = _ms(words[1])
        elif "Non-2xx" in line or "Socket errors" in line:
            errors += sum(int(w.strip(",")) for w in words if w.strip(",").isdigit())
    return Load("wrk", rate, p50, p99, errors)


async def _connection(
    host: str, port: int, request: bytes, until: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < until:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 2"):
                errors.append(1)
            latencies.append((time.perf_counter() - start) * 1000)
    finally:
        writer.close()


async def _main(url: str, seconds: float, connections: int, body: bytes) -> Load:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors: list[int] = []
    until = time.monotonic() + seconds
    start = time.monotonic()
    await asyncio.gather(
        *(_connection(host, port, request, until, latencies, errors) for _ in range(connections))
    )
    elapsed = time.monotonic() - start
    latencies.sort()

    def p(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return Load("python", len(latencies) / elapsed, p(0.5), p(0.99), len(errors))


if __name__ == "__main__":
    url, seconds, connections = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    load = asyncio.run(_main(url, seconds, connections, sys.stdin.buffer.read()))
    sys.stdout.write(json.dumps(msgspec.to_builtins(load)))
