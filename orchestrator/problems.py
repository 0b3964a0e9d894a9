"""Every problem of a JSON value against a msgspec type, each with its JSON path.

msgspec stops at the first error; a person fixing a document wants all of them at once. This
walks the type (structs field by field, lists item by item) and lets msgspec judge only the
leaves, so each message is msgspec's own and each path is exact.
"""

import types
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec

from orchestrator.transfer import Problem

MAX_PROBLEMS = 200  # a document wrong everywhere gets the first ones, not megabytes of them


def check(value: Any, type_: Any, path: str = "$") -> list[Problem]:
    found: list[Problem] = []
    _check(value, type_, path, found)
    return found[:MAX_PROBLEMS]


def _check(value: Any, type_: Any, path: str, found: list[Problem]) -> None:
    if len(found) >= MAX_PROBLEMS:
        return
    origin = get_origin(type_)
    if origin is Annotated:
        base, *metas = get_args(type_)
        if get_origin(base) is list:
            _check_length(value, metas, path, found)
            _check(value, base, path, found)
        else:
            _leaf(value, type_, path, found)
    elif isinstance(type_, type) and issubclass(type_, msgspec.Struct):
        _check_struct(value, type_, path, found)
    elif origin is list:
        _check_list(value, type_, path, found)
    elif origin in (Union, types.UnionType):
        _check_union(value, type_, path, found)
    else:
        _leaf(value, type_, path, found)


def _check_list(value: Any, type_: Any, path: str, found: list[Problem]) -> None:
    if not isinstance(value, list):
        found.append(Problem(path=path, message=f"Expected `array`, got {_kind(value)}"))
        return
    (item,) = get_args(type_)
    for i, element in enumerate(value):
        _check(element, item, f"{path}[{i}]", found)


def _check_union(value: Any, type_: Any, path: str, found: list[Problem]) -> None:
    options = [t for t in get_args(type_) if t is not type(None)]
    if value is None and len(options) < len(get_args(type_)):
        return
    if len(options) == 1:
        _check(value, options[0], path, found)
    else:
        _leaf(value, type_, path, found)


def _check_struct(value: Any, type_: type[msgspec.Struct], path: str, found: list[Problem]) -> None:
    if not isinstance(value, dict):
        found.append(Problem(path=path, message=f"Expected `object`, got {_kind(value)}"))
        return
    fields = msgspec.structs.fields(type_)
    known = {f.encode_name for f in fields}
    for f in fields:
        where = f"{path}.{f.encode_name}"
        if f.encode_name in value:
            _check(value[f.encode_name], f.type, where, found)
        elif f.required:
            found.append(Problem(path=where, message=f"Object missing required field `{f.name}`"))
    if type_.__struct_config__.forbid_unknown_fields:
        for key in value:
            if key not in known:
                found.append(
                    Problem(
                        path=f"{path}.{key}",
                        message=f"Object contains unknown field `{key}`; known: "
                        + ", ".join(sorted(known)),
                    )
                )


def _check_length(value: Any, metas: list[Any], path: str, found: list[Problem]) -> None:
    if not isinstance(value, list):
        return  # reported by the list check
    for meta in metas:
        if isinstance(meta, msgspec.Meta):
            if meta.max_length is not None and len(value) > meta.max_length:
                found.append(
                    Problem(path=path, message=f"Expected `array` of length <= {meta.max_length}")
                )
            if meta.min_length is not None and len(value) < meta.min_length:
                found.append(
                    Problem(path=path, message=f"Expected `array` of length >= {meta.min_length}")
                )


def _leaf(value: Any, type_: Any, path: str, found: list[Problem]) -> None:
    try:
        msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        message, _, rest = str(exc).partition(" - at `$")
        found.append(Problem(path=path + rest.rstrip("`"), message=message))


def _kind(value: Any) -> str:
    names = {dict: "object", list: "array", str: "str", bool: "bool", int: "int", float: "float"}
    return "`null`" if value is None else f"`{names.get(type(value), type(value).__name__)}`"
