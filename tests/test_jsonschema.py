"""Generated schemas do not depend on how the installed msgspec copies docstrings.

msgspec 0.22 puts a Struct's ``__doc__`` into its schema as written (indented); 0.23 strips the
common indentation. Both must give the same checked-in ``openapi.json`` and TODO schema.
"""

import inspect
import json
from typing import Any

import msgspec

from api.openapi import encoded
from orchestrator.documents import schema_json
from orchestrator.jsonschema import cleandoc_descriptions, schema


class Indented(msgspec.Struct):
    """A struct whose docstring is indented, as every multi-line docstring is.

    Its second paragraph.
    """

    description: str = "  kept as it is: a field's default is data, not a description"


def as_msgspec_0_22(node: Any, docs: dict[str, str]) -> Any:
    """``node`` with each component's description replaced by its raw docstring, as msgspec
    0.22 wrote it."""
    components = node["components"]["schemas"] if "components" in node else node["$defs"]
    for name, component in components.items():
        if name in docs:
            component["description"] = docs[name]
    return node


def docstrings(document: dict[str, Any]) -> dict[str, str]:
    """The raw docstrings of the Struct types named in a document's components."""
    found: dict[str, str] = {}
    pending: list[type] = [msgspec.Struct]
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if cls.__doc__ and cls.__module__.split(".")[0] in ("api", "orchestrator"):
            found[cls.__name__] = cls.__doc__
    components = document.get("components", {}).get("schemas") or document.get("$defs", {})
    return {name: doc for name, doc in found.items() if name in components}


def test_a_docstring_description_is_cleaned_as_inspect_cleans_docstrings() -> None:
    generated = schema(Indented)
    component = generated["$defs"]["Indented"]
    assert Indented.__doc__ is not None
    assert component["description"] == inspect.cleandoc(Indented.__doc__)
    assert component["properties"]["description"]["default"].startswith("  kept")


def test_cleaning_touches_descriptions_and_leaves_data_alone() -> None:
    node = {
        "description": "\n    indented\n      more\n    ",
        "properties": {"description": {"type": "string", "default": "  data  "}},
        "examples": [{"description": "  data too"}],
    }
    assert cleandoc_descriptions(node) == {
        "description": "indented\n  more",
        "properties": {"description": {"type": "string", "default": "  data  "}},
        "examples": [{"description": "  data too"}],
    }


def test_openapi_is_the_same_whichever_way_msgspec_copies_docstrings() -> None:
    document = json.loads(encoded())
    docs = docstrings(document)
    assert len(docs) > 20  # the check covers the document's many documented Structs
    old_style = as_msgspec_0_22(json.loads(encoded()), docs)
    assert old_style != document
    assert cleandoc_descriptions(old_style) == document


def test_the_todo_schema_is_the_same_whichever_way_msgspec_copies_docstrings() -> None:
    document = json.loads(schema_json())
    docs = docstrings(document)
    assert docs
    old_style = as_msgspec_0_22(json.loads(schema_json()), docs)
    assert cleandoc_descriptions(old_style) == document
