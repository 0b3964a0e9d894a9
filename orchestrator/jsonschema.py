"""JSON Schemas from msgspec types, with descriptions that do not depend on msgspec's version.

msgspec copies a Struct's docstring into its schema's ``description``: up to 0.22 verbatim
(with the docstring's indentation), from 0.23 with the common indentation stripped. The
checked-in ``openapi.json`` and ``docs/todo-document.schema.json`` must not change with the
installed msgspec, so every description is passed through ``inspect.cleandoc``, which gives
the same text for both.
"""

import inspect
from typing import Any

import msgspec

# Values under these keywords are instance data, not schemas: a "description" inside is data.
_DATA_KEYWORDS = frozenset({"default", "const", "enum", "examples", "example"})


def cleandoc_descriptions(node: Any) -> Any:
    """``node`` with every ``description`` text of a schema cleaned as ``inspect.cleandoc``
    cleans a docstring (common indentation and blank edges removed)."""
    if isinstance(node, list):
        return [cleandoc_descriptions(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: (
            inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else value
            if key in _DATA_KEYWORDS
            else cleandoc_descriptions(value)
        )
        for key, value in node.items()
    }


def schema(type_: Any) -> dict[str, Any]:
    """``msgspec.json.schema`` with descriptions cleaned."""
    result: dict[str, Any] = cleandoc_descriptions(msgspec.json.schema(type_))
    return result


def schema_components(
    types: list[Any], ref_template: str
) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """``msgspec.json.schema_components`` with descriptions cleaned."""
    refs, components = msgspec.json.schema_components(types, ref_template=ref_template)
    return refs, cleandoc_descriptions(components)
