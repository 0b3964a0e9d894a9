"""Settings: one typed object, built once at the entry point and passed down."""

import os
from dataclasses import dataclass, fields
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str | None = None
    data_dir: Path = Path("data")
    embedded_redis_port: int = 6390  # the local Redis `serve` starts when REDIS_URL is unset
    # Event log
    event_retention: int = 1_000_000  # events kept per workspace (approximate trim); 0 keeps all
    idempotency_ttl_ms: int = 24 * 3600 * 1000
    # Requests
    max_body_bytes: int = 1024 * 1024
    max_batch: int = 1000
    max_page_limit: int = 500
    read_your_writes_timeout_s: float = 5.0
    projection_max_lag: int = 10_000  # events; POST /log waits for projections beyond it
    # Live delivery
    replay_batch: int = 1000
    subscriber_queue: int = 1024
    heartbeat_s: float = 15.0
    sse_retry_ms: int = 2000
    subscriber_report_ttl_ms: int = 15_000
    subscriber_report_every_s: float = 5.0
    # Background work
    workspace_idle_s: float = 60.0
    question_sweep_s: float = 1.0

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        """``REDIS_URL`` and ``ORCH_<FIELD>`` (upper case) override the defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            name = "REDIS_URL" if f.name == "redis_url" else f"ORCH_{f.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            kind = type(getattr(cls(), f.name))
            try:
                values[f.name] = (
                    Path(raw)
                    if f.name == "data_dir"
                    else (raw if f.name == "redis_url" else kind(raw))
                )
            except ValueError as exc:
                raise ValueError(f"{name}={raw!r}: expected {kind.__name__}") from exc
        return cls(**values)  # type: ignore[arg-type]
