"""The event log's entries read as events the same way, whether redis-py made their fields
a dict (XRANGE, for reads) or they stay a flat list (a raw XREAD reply, for the feed)."""

from typing import Any

import pytest
from redis.asyncio import Redis

from orchestrator.eventlog import parse_entries, parse_raw_entries
from orchestrator.keys import WorkspaceKeys
from orchestrator.replies import stream_entries


@pytest.mark.anyio
async def test_dict_and_flat_field_lists_give_the_same_events(
    client: Redis, workspace: str
) -> None:
    key = WorkspaceKeys(workspace).events
    await client.xadd(key, {"type": "a.b", "payload": b'{"n":1}', "ts": "1"}, id="1-0")
    await client.xadd(key, {"ts": "2", "payload": b'{"n":2}', "type": "c.d"}, id="2-0")
    parsed = parse_entries(stream_entries(await client.xrange(key)))
    wire = Redis(connection_pool=client.connection_pool)  # the reply as the feed reads it
    wire.set_response_callback("XREAD", lambda response, **options: response)
    raw: Any = await wire.xread({key: "0-0"})
    [(_, entries)] = raw.items() if isinstance(raw, dict) else raw
    assert parse_raw_entries(entries) == parsed
    assert [(e.seq, e.type, bytes(e.payload)) for e in parsed] == [
        (1, "a.b", b'{"n":1}'),
        (2, "c.d", b'{"n":2}'),
    ]
