"""Redis connections that survive a Redis restart without resending a command, and pack
commands in C."""

import asyncio

from hiredis import pack_command
from redis.asyncio import Connection, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.typing import EncodableT

HEALTH_CHECK_S = 1  # a connection idle this long is PINGed before its next command

_PING_RETRY = Retry(NoBackoff(), 1)


class CheckedConnection(Connection):
    """Before a command on a connection idle for a second, PING it; if the PING fails (a
    socket that went stale when Redis restarted), reconnect and PING once more.

    redis-py's own ``retry`` would do this too, but it also resends the command itself when
    its connection fails, which could repeat an append whose reply was lost; here only the
    PING is retried, and a command's failure still reaches its caller as a retryable 503.
    """

    async def check_health(self) -> None:
        if (
            self.health_check_interval
            and asyncio.get_running_loop().time() > self.next_health_check
        ):
            await _PING_RETRY.call_with_retry(
                self._send_ping, self._ping_failed, with_failure_count=True
            )

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        """The command in RESP, packed by hiredis (an append's EVALSHA: ~1 us, against ~8 us
        in redis-py's asyncio connection, which packs in Python). A command name holding a
        space (``"CONFIG GET"``), or an argument hiredis does not take, goes to redis-py,
        which splits the one and raises its own error for the other."""
        name = args[0]
        spaced = " " in name if isinstance(name, str) else isinstance(name, bytes) and b" " in name
        if not spaced:
            try:
                return [pack_command(args)]  # type: ignore[arg-type]  # its stub: a 1-tuple
            except TypeError:
                pass
        return super().pack_command(*args)


def pool_options(url: str) -> dict[str, object]:
    """Connection options for the service's pools (plain ``redis://`` gets the checked
    connection; TLS and unix-socket URLs keep redis-py's own classes)."""
    options: dict[str, object] = {"socket_connect_timeout": 5, "socket_timeout": 30}
    if url.startswith("redis://"):
        options.update(connection_class=CheckedConnection, health_check_interval=HEALTH_CHECK_S)
    return options


def connect(url: str) -> Redis:
    """A client with the service's connection options (``orchestrator rebuild``, tokens)."""
    return Redis.from_url(url, **pool_options(url))  # type: ignore[arg-type]
