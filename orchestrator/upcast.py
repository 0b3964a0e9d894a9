"""Reading what earlier versions recorded, in today's shapes (upcasting).

Events are never rewritten: a stream keeps the bytes it was given. Earlier versions wrote
entries and phases in shapes that have since changed to the product's published ones, so an
old payload is mapped when it is read (an event's, or a read model's built before the
change), and folds into the same read models as a new one:

- ``priority`` was an integer, -1000..1000, higher dispatched first (default 0). It maps to
  a word by ``word_of``: below 0 ``low``; 0 ``medium``; 1 to 99 ``high``; 100 and above
  ``critical``. Entries that differed only by their number within one word keep their
  relative order by ``seq`` only.
- ``spec`` was ``{"text", "acceptance"}`` (either may be left out): ``text`` becomes
  ``requirements``, ``acceptance`` becomes ``acceptance_criteria``, the other published
  fields are empty. Its author and edit time were not recorded (``authored_by`` and
  ``last_edited`` are null); ``revision`` is 1 for a spec that says something, else 0.
- a phase's ``order`` became ``seq`` (same meaning, same value), and ``container_id`` (null)
  is new.

Version 1 documents are mapped by the same function (``mapped``), entries and phases alike.

Only payloads that hold an old key are decoded generically and mapped; the rest are
returned as they are (the cost of a search), so today's events pay next to nothing.
"""

import re
from typing import Any, Final

import msgspec

# msgspec writes compact JSON, and a quote inside a string is escaped: these byte patterns
# match object keys only, never text an author wrote.
_OLD_KEYS: Final = re.compile(rb'"priority":-?[0-9]|"acceptance":|"order":')
_decode: Final = msgspec.json.Decoder().decode
_encode: Final = msgspec.json.Encoder().encode


def word_of(priority: int) -> str:
    """The published priority word of an integer priority of an earlier version."""
    if priority < 0:
        return "low"
    if priority == 0:
        return "medium"
    return "high" if priority < 100 else "critical"


def spec_of(old: dict[str, Any]) -> dict[str, Any]:
    text = old.get("text") or ""
    acceptance = list(old.get("acceptance") or [])
    return {
        "requirements": text,
        "acceptance_criteria": acceptance,
        "files_to_create": [],
        "files_to_modify": [],
        "patterns": "",
        "api_contract": "",
        "examples": "",
        "integration_points": "",
        "authored_by": None,
        "last_edited": None,
        "revision": 1 if text or acceptance else 0,
    }


def is_old_spec(value: Any) -> bool:
    """A spec of an earlier version: a dict of its keys alone. ``{}`` is one (a spec that
    said nothing, mapped to the empty published spec, which means the same); a spec that
    mixes old and published keys is neither, and is left as it is for validation to refuse,
    rather than mapped with its published fields dropped."""
    return isinstance(value, dict) and set(value) <= {"text", "acceptance"}


def mapped(value: Any, phases: bool = False) -> Any:
    """``value`` with every old entry, spec and phase in it mapped, wherever it sits.

    A dict with ``order`` and no ``seq`` is an old phase when it is one of a list of phases
    (``phases`` says ``value`` is that list or one of them; any list under a ``phases`` key
    is one), or when it has ``phase_rounds``, which phases carried wherever they sat in an
    event. A document of version 1 left ``phase_rounds`` out when it was unset.
    """
    if isinstance(value, list):
        return [mapped(v, phases) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: mapped(v, k == "phases") for k, v in value.items()}
    priority = out.get("priority")
    if isinstance(priority, int) and not isinstance(priority, bool):
        out["priority"] = word_of(priority)
    if is_old_spec(out.get("spec")):
        out["spec"] = spec_of(out["spec"])
    if "order" in out and "seq" not in out and (phases or "phase_rounds" in out):
        out["seq"] = out.pop("order")
    return out


def current(raw: bytes) -> bytes:
    """The JSON of an entry, a phase, or a payload carrying them, in today's shapes."""
    if _OLD_KEYS.search(raw) is None:
        return raw
    return _encode(mapped(_decode(raw)))
