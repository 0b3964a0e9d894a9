"""``children`` may not form a cycle (README: no cycles, 422 ``CYCLE``), as ``depends_on``
may not: an entry that is its own descendant has no place in the tree ``orchestrator todo``
draws, which then showed neither entry of the cycle."""

from typing import Any

import httpx

DOCUMENT = {"format": "orchestrator-todo", "schema_version": 1}


def cycle_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "CYCLE"
    assert "children" in error["message"]
    return error


def test_children_in_a_cycle_are_422_cycle_and_nothing_is_created(api: httpx.Client) -> None:
    assert api.post("/todo/entries", json={"entries": [{"id": "a", "content": "A"}]}).is_success
    response = api.post(
        "/todo/entries",
        json={
            "entries": [
                {"id": "c", "content": "C", "children": ["d", "a"]},
                {"id": "d", "content": "D", "children": ["c"]},
            ]
        },
    )
    cycle = cycle_error(response)["details"]["cycle"]
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["c", "d"]
    assert [e["id"] for e in api.get("/todo").json()["entries"]] == ["a"]


def test_a_tree_of_children_is_accepted(api: httpx.Client) -> None:
    # Shared children and a child that depends on its parent are no cycle through children.
    entries = [
        {"id": "p", "content": "P", "children": ["x", "y"]},
        {"id": "q", "content": "Q", "children": ["y"]},
        {"id": "x", "content": "X", "depends_on": ["p"]},
        {"id": "y", "content": "Y"},
    ]
    assert api.post("/todo/entries", json={"entries": entries}).status_code == 201


def test_importing_children_in_a_cycle_is_422_cycle_and_appends_nothing(
    api: httpx.Client,
) -> None:
    document = {
        **DOCUMENT,
        "entries": [
            {"id": "c", "content": "C", "children": ["d"]},
            {"id": "d", "content": "D", "children": ["e"]},
            {"id": "e", "content": "E", "children": ["c"]},
        ],
    }
    error = cycle_error(api.post("/import", json={"document": document}))
    [problem] = error["details"]["problems"]
    assert problem["path"].startswith("$.document.entries[")
    assert problem["path"].endswith("].children")
    assert "c -> d -> e -> c" in problem["message"] or "d -> e -> c -> d" in problem["message"]
    assert api.get("/debug-dump").json()["log"]["last_seq"] == 0
    assert api.get("/todo").json()["entries"] == []
