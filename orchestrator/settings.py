"""Settings: one typed object, built once at the entry point and passed down."""

import ipaddress
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

from orchestrator.executor import Limits


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
    max_config_bytes: int = 256 * 1024  # the workspace config's JSON (PATCHes past it: 413)
    read_your_writes_timeout_s: float = 5.0
    projection_max_lag: int = 10_000  # events; POST /log waits for projections beyond it
    # Live delivery
    replay_batch: int = 1000
    replay_batch_bytes: int = 1024 * 1024  # a replay batch also stops at this many bytes
    subscriber_queue: int = 1024
    heartbeat_s: float = 15.0
    sse_retry_ms: int = 2000
    subscriber_report_ttl_ms: int = 15_000
    subscriber_report_every_s: float = 5.0
    feed_streams_per_read: int = 1000  # workspaces one shared feed reader (connection) reads
    # Executor
    default_workers: int = 4  # worker slots when a workspace sets no max_workers cap
    max_attempts: int = 3  # attempts per entry (expired leases, retried failures)
    worker_lease_ms: int = 30_000  # a worker lease runs this long past each heartbeat
    claim_timeout_ms: int = 300_000  # a dispatched entry nobody claims returns to pending
    dispatcher_lease_ms: int = 5_000  # one replica dispatches a workspace; taken over after
    dispatch_tick_s: float = 0.5  # how often the dispatcher runs a cycle
    max_memory_notes: int = 200  # memory notes per phase
    # Security and per-client bounds
    auth: str = "auto"  # one of AUTH_MODES
    auth_cache_s: float = 5.0  # token lookups are cached this long (revocation delay)
    max_streams_per_token: int = 100  # SSE streams one token may hold per replica
    max_questions_per_session: int = 100  # pending questions one session may have
    # Slow clients and connections (orchestrator/http_limits.py; the proxy bounds them too)
    header_timeout_s: float = 10.0  # a request head must be complete this long after it began
    body_timeout_s: float = 30.0  # a request body may go silent this long
    max_head_bytes: int = 16 * 1024  # request line and headers; larger: 400
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    max_connections: int = 0  # open connections per replica, then 503; 0: 90% of ulimit -n
    # Background work
    workspace_idle_s: float = 60.0
    question_sweep_s: float = 1.0
    # Vault and import
    vault_dir: str = ""  # snapshots in files under this directory; empty: in Redis
    import_timeout_s: float = 120.0  # an import job (clone included) fails after this
    import_max_bytes: int = 8 * 1024 * 1024  # largest document read from a repository
    import_protocols: str = "https"  # URL schemes an import may clone over (of IMPORT_SCHEMES)
    import_local_roots: str = ""  # directories (os.pathsep) local repositories may be under
    import_allow_networks: str = ""  # CIDRs (comma) a repository's host may resolve into
    import_max_concurrent: int = 2  # running imports per workspace per replica

    @property
    def limits(self) -> "Limits":
        return Limits(
            default_workers=self.default_workers,
            max_attempts=self.max_attempts,
            lease_ms=self.worker_lease_ms,
            claim_ms=self.claim_timeout_ms,
        )

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
        return _checked(cls(**values))  # type: ignore[arg-type]


# auto: tokens are required once one exists; required: always.
AUTH_MODES = ("auto", "required")
# What ORCH_IMPORT_PROTOCOLS may name (``file`` is accepted for old configurations, but
# local repositories are allowed by ORCH_IMPORT_LOCAL_ROOTS alone).
IMPORT_SCHEMES = ("file", "git", "http", "https", "ssh")
# Numbers for which 0 means something (keep every event; 90% of ``ulimit -n``); every other
# count, size and duration must be positive: a header timeout of 0 would close every
# connection at once, a replay batch of 0 would never end.
ZERO_MEANS_DEFAULT = frozenset({"event_retention", "max_connections"})


def _checked(settings: Settings) -> Settings:
    """The settings, or ``ValueError`` naming the variable to fix: a typo must stop the
    server, not quietly leave it more open than its operator meant."""
    _check_numbers(settings)
    if settings.auth not in AUTH_MODES:
        raise ValueError(f"ORCH_AUTH={settings.auth!r}: expected one of {', '.join(AUTH_MODES)}")
    unknown = set(settings.import_protocols.split(":")) - set(IMPORT_SCHEMES)
    if unknown:
        raise ValueError(
            f"ORCH_IMPORT_PROTOCOLS={settings.import_protocols!r}: expected names of "
            f"{', '.join(IMPORT_SCHEMES)} separated by ':'"
        )
    roots = [r for r in settings.import_local_roots.split(os.pathsep) if r]
    if not all(os.path.isabs(r) for r in roots):
        raise ValueError(
            f"ORCH_IMPORT_LOCAL_ROOTS={settings.import_local_roots!r}: expected absolute "
            f"directories separated by {os.pathsep!r}"
        )
    try:
        for cidr in filter(None, settings.import_allow_networks.split(",")):
            ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError as exc:
        raise ValueError(
            f"ORCH_IMPORT_ALLOW_NETWORKS={settings.import_allow_networks!r}: expected "
            "networks such as 10.0.0.0/8,fd00::/8 separated by ','"
        ) from exc
    return settings


def _check_numbers(settings: Settings) -> None:
    """Every count, size and duration can work: finite, and above 0 unless 0 means something."""
    for f in fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        zero_ok = f.name in ZERO_MEANS_DEFAULT
        # not finite: nan compares false with everything, so a nan deadline never falls due
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            expected = "0 or more" if zero_ok else "a number above 0"
            raise ValueError(f"ORCH_{f.name.upper()}={value!r}: expected {expected}")
    if settings.embedded_redis_port > 65535:
        raise ValueError(
            f"ORCH_EMBEDDED_REDIS_PORT={settings.embedded_redis_port}: expected a port, 1 to 65535"
        )
