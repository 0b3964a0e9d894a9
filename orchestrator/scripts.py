"""Lua scripts, loaded once and called by SHA (reloaded after a Redis restart)."""

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError


@dataclass(frozen=True)
class Script:
    name: str
    source: str = field(repr=False)
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())

    @classmethod
    def load(cls, name: str, package: str = "orchestrator.lua") -> "Script":
        text = resources.files(package).joinpath(f"{name}.lua").read_text()
        return cls(name, text)

    async def __call__(self, redis: Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await redis.script_load(self.source)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Pipeline, keys: list[str], args: list[Any]) -> None:
        pipe.evalsha(self.sha, len(keys), *keys, *args)


Call = tuple[Script, list[str], list[Any]]


async def run_all(redis: Redis, calls: list[Call]) -> list[Any]:
    """Run script calls in one pipeline (one round trip); errors are returned, not raised.

    A NOSCRIPT reply means that call did nothing (Redis restarted and forgot the script), so
    the calls that got one are rerun once after loading their scripts.
    """
    results = await _pipeline(redis, calls)
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        for script in {calls[i][0] for i in missing}:
            await redis.script_load(script.source)
        retried = await _pipeline(redis, [calls[i] for i in missing])
        for i, result in zip(missing, retried, strict=True):
            results[i] = result
    return results


async def _pipeline(redis: Redis, calls: list[Call]) -> list[Any]:
    pipe = redis.pipeline(transaction=False)
    for script, keys, args in calls:
        script.queue(pipe, keys, args)
    return list(await pipe.execute(raise_on_error=False))


APPEND = Script.load("append")
APPLY = Script.load("apply")
SUBSCRIBERS = Script.load("subscribers")
