"""One mapping of earlier versions' shapes, for the event log's payloads and for version 1
documents alike (``upcast.mapped``): the same spec and phase found old by both."""

import json
from typing import Any

import pytest

from orchestrator import upcast
from orchestrator.documents import upgraded

EMPTY_SPEC = upcast.spec_of({})


def compact(value: Any) -> bytes:
    """JSON as the service writes it (msgspec's: no spaces)."""
    return json.dumps(value, separators=(",", ":")).encode()


def test_an_empty_old_spec_maps_to_the_empty_published_spec_in_events_and_documents() -> None:
    payload = json.loads(upcast.current(b'{"entries":[{"id":"a","priority":3,"spec":{}}]}'))
    assert payload["entries"][0] == {"id": "a", "priority": "high", "spec": EMPTY_SPEC}
    document = {"schema_version": 1, "entries": [{"id": "a", "priority": 3, "spec": {}}]}
    assert upgraded(document)["entries"] == payload["entries"]


def test_a_spec_mixing_old_and_published_keys_is_left_for_validation() -> None:
    mixed = {"text": "t", "requirements": "r"}
    raw = compact({"entries": [{"id": "a", "priority": 3, "spec": mixed}]})
    assert json.loads(upcast.current(raw))["entries"][0]["spec"] == mixed
    document = {"schema_version": 1, "entries": [{"id": "a", "spec": mixed}]}
    assert upgraded(document)["entries"][0]["spec"] == mixed


@pytest.mark.parametrize(
    "phase",
    [
        {"id": "p", "name": "P", "order": 3},  # version 1 left phase_rounds out when unset
        {"id": "p", "name": "P", "order": 3, "phase_rounds": 2},
    ],
)
def test_a_phase_in_a_list_of_phases_maps_with_or_without_phase_rounds(
    phase: dict[str, object],
) -> None:
    expected = {**{k: v for k, v in phase.items() if k != "order"}, "seq": 3}
    raw = compact({"phases": [phase], "priority": 1})
    assert json.loads(upcast.current(raw))["phases"] == [expected]
    assert upgraded({"schema_version": 1, "phases": [phase]})["phases"] == [expected]


def test_an_order_outside_a_phase_is_left() -> None:
    assert upcast.mapped({"spec": {"order": 1}, "other": [{"order": 2}]}) == {
        "spec": {"order": 1},
        "other": [{"order": 2}],
    }
