"""config.updated records the patch alone; the config projection merges it in Redis
(apply.lua's MERGEPATCH). The merge must give the very text ``merge_patch`` would, and events
recorded in the old shape (the patch and the whole merged config) must still replay to the
same config: the log is never rewritten."""

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from orchestrator.config import merge_patch
from orchestrator.eventlog import EventLog
from orchestrator.events import ConfigUpdated, StoredEvent, new_event
from orchestrator.keys import WorkspaceKeys
from orchestrator.scripts import APPLY
from projections.config import ConfigProjection, compose, read_config
from projections.runner import Projector, _flatten

# Values msgspec reads back as it wrote them; strings and keys with quotes, backslashes,
# control and non-ASCII characters, which JSON escapes (or not) in its own ways.
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=6) | st.sampled_from(
    ['"', "\\", '\\"', "}", "]", ",", ":", "{", "null", "\n", "é", "\u2028"]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=12,
)
objects = st.dictionaries(texts, values, max_size=4)
# Targets as the read model holds them: merged configs, which never hold a null member.
configs = objects.map(lambda o: merge_patch({}, o))


@pytest.fixture
def redis(redis_url: str) -> Iterator[SyncRedis]:
    with SyncRedis.from_url(redis_url) as client:
        yield client


def merged_in_redis(redis: SyncRedis, keys: WorkspaceKeys, seq: int, *patches: Any) -> bytes:
    """Project config.updated events carrying ``patches`` (one batch, the first at ``seq``),
    as the projector would."""
    events = []
    for n, patch in enumerate(patches, start=seq):
        event = new_event(ConfigUpdated(patch=patch))
        events.append(StoredEvent(seq=n, type=event.type, payload=msgspec.Raw(event.payload)))
    commands = ConfigProjection().apply_batch(keys, events)
    last = seq + len(patches) - 1
    applied = redis.evalsha(
        APPLY.sha, 1, keys.checkpoints, "config", seq - 1, last, *_flatten(commands)
    )
    assert applied == [last, 1]
    doc: bytes = redis.hget(keys.config, "doc")  # type: ignore[assignment]
    return doc


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(configs, objects, objects)
def test_the_merge_in_redis_gives_the_text_merge_patch_gives(
    redis: SyncRedis, target: dict[str, Any], first: dict[str, Any], second: dict[str, Any]
) -> None:
    redis.script_load(APPLY.source)
    keys = WorkspaceKeys("ws_merge")
    redis.delete(keys.config, keys.checkpoints)
    redis.hset(keys.config, "doc", msgspec.json.encode(target))
    once = merge_patch(target, first)
    assert merged_in_redis(redis, keys, 1, first) == msgspec.json.encode(once)
    twice = merge_patch(once, second)
    assert merged_in_redis(redis, keys, 2, second) == msgspec.json.encode(twice)
    assert redis.hget(keys.config, "version") == b"2"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(configs, st.lists(objects, min_size=2, max_size=6))
def test_a_batch_of_patches_merges_as_they_do_one_by_one(
    redis: SyncRedis, target: dict[str, Any], patches: list[dict[str, Any]]
) -> None:
    redis.script_load(APPLY.source)
    keys = WorkspaceKeys("ws_merge_batch")
    redis.delete(keys.config, keys.checkpoints)
    redis.hset(keys.config, "doc", msgspec.json.encode(target))
    expected = target
    for patch in patches:
        expected = merge_patch(expected, patch)
    assert merged_in_redis(redis, keys, 1, *patches) == msgspec.json.encode(expected)
    assert redis.hget(keys.config, "version") == str(len(patches)).encode()


@given(configs, objects, objects)
def test_a_composed_patch_does_what_both_do_members_order_included(
    target: dict[str, Any], first: dict[str, Any], then: dict[str, Any]
) -> None:
    both = compose(first, then)
    if both is not None:
        once = msgspec.json.encode(merge_patch(target, both))
        assert once == msgspec.json.encode(merge_patch(merge_patch(target, first), then))


def test_patches_compose_unless_an_object_merges_into_a_value_or_a_member_comes_back() -> None:
    assert compose({"a": 1, "b": {"c": 1}}, {"b": {"d": None}, "e": 2}) == {
        "a": 1,
        "b": {"c": 1, "d": None},
        "e": 2,
    }
    assert compose({"a": 1}, {"a": {"b": 1}}) is None  # merged into 1: replaces it whole
    assert compose({"a": None}, {"a": {"b": 1}}) is None
    assert compose({"a": None}, {"a": 1}) is None  # deleted and set again: moves to the end
    assert compose({"a": None}, {"a": None}) == {"a": None}


def test_a_first_patch_merges_into_nothing(redis: SyncRedis) -> None:
    redis.script_load(APPLY.source)
    keys = WorkspaceKeys("ws_merge_first")
    redis.delete(keys.config, keys.checkpoints)
    patch = {"a": {"b": None, "c": [None, {"d": None}]}, "e": None}
    assert merged_in_redis(redis, keys, 1, patch) == b'{"a":{"c":[null,{"d":null}]}}'


# Replaying a log of both shapes

OLD_AND_NEW: list[tuple[str, bytes]] = [
    # As recorded before: the patch and the whole merged config.
    ("config.updated", b'{"patch":{"a":1},"config":{"a":1}}'),
    ("config.updated", b'{"patch":{"b":{"c":2}},"config":{"a":1,"b":{"c":2}}}'),
    ("todo.archived", b'{"id":"todo_1"}'),  # a type this version does not know
    # As recorded now: the patch alone.
    ("config.updated", b'{"patch":{"b":{"d":[3]},"a":null}}'),
    # The old shape again (a replica still on the old code, mid-upgrade): taken as is.
    ("config.updated", b'{"patch":{"e":"x"},"config":{"b":{"c":2,"d":[3]},"e":"x"}}'),
    ("config.updated", b'{"patch":{"b":{"c":null},"f":{"g":true}}}'),
]


@pytest.mark.anyio
async def test_a_log_of_old_and_new_shapes_replays_to_the_same_config(
    client: Redis, workspace: str
) -> None:
    keys = WorkspaceKeys(workspace)
    for seq, (kind, payload) in enumerate(OLD_AND_NEW, start=1):  # raw entries, as stored
        await client.xadd(keys.events, {"type": kind, "payload": payload, "ts": 0}, id=f"{seq}-0")
    await client.hset(keys.meta, "seq", len(OLD_AND_NEW))
    projector = Projector(EventLog(client, retention=0, idempotency_ttl_ms=60_000))
    expected = {"b": {"d": [3]}, "e": "x", "f": {"g": True}}

    assert await projector.catch_up(workspace) == len(OLD_AND_NEW)
    assert await read_config(client, workspace) == (expected, 6)
    built = await client.hget(keys.config, "doc")
    assert built == msgspec.json.encode(expected)

    for batch in (1, 2, 1000):  # however the replay is cut into batches
        projector.batch = batch
        assert await projector.rebuild(workspace) == len(OLD_AND_NEW)
        assert await client.hget(keys.config, "doc") == built
        assert await client.hget(keys.config, "version") == b"6"
