"""The TODO document as a Markdown checklist, and back.

    <!-- orchestrator-todo {"format":"orchestrator-todo","schema_version":2} -->
    # TODO

    The project context, as paragraphs.

    ## Budget

    - cap_usd: 25.0

    ## Phase: Design
    <!-- phase {"id":"phs_1","seq":0,"status":"active"} -->

    The phase's description.

    - [ ] Write the parser
      <!-- entry {"id":"entry_1","priority":"high","spec":{"revision":1}} -->
      > The spec's requirements, quoted.
      - an acceptance criterion

    ### Memory

    - a memory note
      <!-- note {"created_at":1700000000000} -->

    ## Entries

    - [x] An entry of no phase, completed

What the text shows is read from the text: an item's title is its content, a ticked box means
completed, the section it is under is its phase, the quote is its spec's requirements and the
bullets under it are its acceptance criteria. The HTML comments (hidden when rendered) carry
the rest, and any value the text cannot show exactly (several lines, edge whitespace, control
characters): a value in a comment wins over its rendering. A checklist written by hand, with no
comments, imports too: boxes become entries (ids minted), ``## name`` sections become phases.
"""

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import msgspec

from orchestrator.documents import (
    FORMAT,
    MAX_ENTRIES,
    MAX_NOTES,
    MAX_PHASES,
    SCHEMA_VERSION,
    DocumentEntry,
    DocumentInvalid,
    DocumentNote,
    DocumentPhase,
    PlanDocument,
    validate,
)
from orchestrator.model import Spec
from orchestrator.transfer import Problem

COMMENT = re.compile(r"^<!-- (orchestrator-todo|phase|entry|note) (\{.*\}) -->$")
CHECKBOX = re.compile(r"^[-*] \[([ xX])\](?: (.*))?$")
BULLET = re.compile(r"^[-*] (.*)$")
QUOTE = re.compile(r"^>(?: (.*))?$")
CAP = re.compile(r"^([A-Za-z_]\w*):\s*(.*)$")
STRUCTURAL = ("#", "- ", "* ", "<!--", ">", "\\")
RESERVED = {"budget": "budget", "entries": "entries", "unphased": "entries"}
INDENT = "  "
# A checklist at all: the header this module writes, or one checkbox.
CHECKLIST = re.compile(r"^(?:<!-- orchestrator-todo |[-*] \[[ xX]\])", re.MULTILINE)

_encode = msgspec.json.Encoder().encode


# Rendering


def render(document: PlanDocument) -> str:
    out = _render_head(document)
    by_phase = _by_phase(document)
    shown = [i for ids in by_phase.values() for i in ids]
    numbered = shown != list(range(len(document.entries)))
    for phase in document.phases:
        out += _render_phase(phase)
        for i in by_phase.get(phase.id, []):
            out += _render_entry(document.entries[i], i if numbered else None)
        if phase.memory:
            out += ["### Memory", ""]
            for note in phase.memory:
                out += _render_note(note)
    if None in by_phase:
        out += ["## Entries", ""]
        for i in by_phase[None]:
            out += _render_entry(document.entries[i], i if numbered else None)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def _render_head(document: PlanDocument) -> list[str]:
    header: dict[str, Any] = {"format": document.format, "schema_version": document.schema_version}
    context = document.project_context
    if context and not _block_safe(context):
        header["project_context"] = context
    out = [_comment("orchestrator-todo", header), "# TODO", ""]
    if context:
        out += [*_paragraphs(context), ""]
    caps = msgspec.to_builtins(document.budget.caps) if document.budget else {}
    if caps:
        out += ["## Budget", "", *(f"- {k}: {_encode(v).decode()}" for k, v in caps.items()), ""]
    return out


def _by_phase(document: PlanDocument) -> dict[str | None, list[int]]:
    """The entries' indexes by the section that shows them: phases in order, then none."""
    grouped: dict[str | None, list[int]] = {p.id: [] for p in document.phases}
    for i, entry in enumerate(document.entries):
        section = entry.phase_id if entry.phase_id in grouped else None
        grouped.setdefault(section, []).append(i)
    return {k: v for k, v in grouped.items() if v}


def _render_phase(phase: DocumentPhase) -> list[str]:
    fields = msgspec.to_builtins(phase)
    fields.pop("memory", None)
    shown_name = _line_safe(phase.name)
    if shown_name:
        fields.pop("name")
    if _block_safe(phase.description) or not phase.description:
        fields.pop("description", None)
    lines = [f"## Phase: {phase.name if shown_name else _flat(phase.name)}"]
    lines += [_comment("phase", fields), ""]
    if phase.description:
        lines += [*_paragraphs(phase.description), ""]
    return lines


def _render_entry(entry: DocumentEntry, number: int | None) -> list[str]:
    fields: dict[str, Any] = msgspec.to_builtins(entry)
    fields.pop("phase_id", None)
    title = entry.content if _line_safe(entry.content) else _flat(entry.content)
    if _line_safe(entry.content):
        fields.pop("content")
    done = entry.status == "completed"
    if entry.status in ("pending", "completed"):
        fields.pop("status", None)
    spec = entry.spec or Spec()
    spec_shown = _quote_safe(spec.requirements) and all(map(_line_safe, spec.acceptance_criteria))
    fields.pop("spec", None)
    if entry.spec is not None:
        fields["spec"] = _spec_rest(spec, spec_shown)
        if not fields["spec"] and (spec.requirements or spec.acceptance_criteria):
            fields.pop("spec")  # the quote and the bullets say it all
    if number is not None:
        fields["n"] = number
    lines = [f"- [{'x' if done else ' '}] {title}"]
    if fields:
        lines.append(INDENT + _comment("entry", fields))
    if spec.requirements:
        lines += [
            f"{INDENT}> {line}" if line else f"{INDENT}>"
            for line in _lines(spec.requirements, spec_shown)
        ]
    lines += [f"{INDENT}- {c if _line_safe(c) else _flat(c)}" for c in spec.acceptance_criteria]
    return [*lines, ""]


SHOWN_SPEC = ("requirements", "acceptance_criteria")
_NO_SPEC = msgspec.to_builtins(Spec())


def _spec_rest(spec: Spec, shown: bool) -> dict[str, Any]:
    """What the comment must carry of the spec: the fields that are set, but not those the
    quote (requirements) and bullets (acceptance criteria) show exactly."""
    fields: dict[str, Any] = msgspec.to_builtins(spec)
    return {k: v for k, v in fields.items() if v != _NO_SPEC[k] and not (shown and k in SHOWN_SPEC)}


def _render_note(note: DocumentNote) -> list[str]:
    fields: dict[str, Any] = msgspec.to_builtins(note)
    shown = note.text if _line_safe(note.text) else _flat(note.text)
    if CHECKBOX.match(f"- {shown}"):
        shown = "\\" + shown  # a note is no entry
    if shown == note.text:
        fields.pop("text")
    lines = [f"- {shown}"]
    if fields:
        lines.append(INDENT + _comment("note", fields))
    return [*lines, ""]


def _comment(kind: str, fields: dict[str, Any]) -> str:
    # "<" and ">" escaped: no value can close the comment early.
    body = _encode(fields).replace(b"<", b"\\u003c").replace(b">", b"\\u003e")
    return f"<!-- {kind} {body.decode()} -->"


def _plain(text: str, allow: str = "") -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") and c not in allow for c in text)


def _line_safe(text: str) -> bool:
    """Shown on one line, the text reads back exactly."""
    return bool(text) and text == text.strip() and _plain(text)


def _block_safe(text: str) -> bool:
    """Shown as paragraphs, the text reads back exactly."""
    lines = text.split("\n")
    return (
        _plain(text, "\n")
        and text == text.strip("\n")
        and all(line == line.strip() and not line.startswith(STRUCTURAL) for line in lines)
    )


def _quote_safe(text: str) -> bool:
    return _plain(text, "\n") and all(line == line.rstrip() for line in text.split("\n"))


def _flat(text: str) -> str:
    """A one-line rendering of text that cannot be shown exactly (the comment has it)."""
    return " ".join("".join(c if _plain(c) else " " for c in text).split()) or "..."


def _lines(text: str, exact: bool) -> list[str]:
    lines = text.split("\n")
    return (
        lines
        if exact
        else [" ".join("".join(c if _plain(c) else " " for c in li).split()) for li in lines]
    )


def _paragraphs(text: str) -> list[str]:
    if _block_safe(text):
        return text.split("\n")
    shown = [_flat(line) if line.strip() else "" for line in text.split("\n")]
    return ["\\" + line if line.startswith(STRUCTURAL) else line for line in shown]


# Reading


@dataclass
class _Item:
    line: int
    fields: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    done: bool = False
    more: list[str] = field(default_factory=list)  # continuation lines of the title
    quote: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    phase: int | None = None  # index of the phase section it is under


@dataclass
class _Phase:
    line: int
    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    description: list[str] = field(default_factory=list)
    notes: list[_Item] = field(default_factory=list)


@dataclass
class _Reader:
    header: dict[str, Any] = field(default_factory=dict)
    context: list[str] = field(default_factory=list)
    caps: dict[str, Any] = field(default_factory=dict)
    phases: list[_Phase] = field(default_factory=list)
    entries: list[_Item] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    section: str = "preamble"  # preamble, budget, entries, phase
    memory: bool = False
    item: _Item | None = None

    def read(self, text: str) -> None:
        for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
            self.line(number, raw.rstrip(" \t"))

    def line(self, number: int, line: str) -> None:
        if line.startswith(("  ", "\t")) and self.item is not None:
            self.continuation(number, line.strip())
        elif line.startswith("#"):
            self.heading(number, line)
        elif match := COMMENT.match(line):
            self.comment(number, match[1], match[2])
        elif match := CHECKBOX.match(line):
            self.count("entries", len(self.entries), MAX_ENTRIES, number)
            self.item = _Item(number, title=(match[2] or "").strip(), done=match[1] != " ")
            if self.section == "phase":
                self.item.phase = len(self.phases) - 1
            self.entries.append(self.item)
        elif (match := BULLET.match(line)) and self.section in ("budget", "phase"):
            self.bullet(number, match[1])
        elif line:
            self.item = None
            self.paragraph(line)
        elif self.item is None:
            self.paragraph(line)

    def heading(self, number: int, line: str) -> None:
        level, _, name = line.partition(" ")
        name = name.strip()
        self.item = None
        if level == "##":
            self.memory = False
            self.section = RESERVED.get(name.lower(), "phase")
            if self.section == "phase":
                self.count("phases", len(self.phases), MAX_PHASES, number)
                name = name[len("Phase: ") :] if name.startswith("Phase: ") else name
                self.phases.append(_Phase(number, name))
        elif level == "###":
            self.memory = self.section == "phase" and name.lower() == "memory"

    def comment(self, number: int, kind: str, body: str) -> None:
        fields = self.decode(number, body)
        if kind == "orchestrator-todo":
            self.header = fields
        elif kind == "phase" and self.section == "phase":
            self.phases[-1].fields = fields

    def continuation(self, number: int, line: str) -> None:
        item = self.item
        assert item is not None
        if match := COMMENT.match(line):
            item.fields = self.decode(number, match[2])
        elif match := QUOTE.match(line):
            item.quote.append(match[1] or "")
        elif match := BULLET.match(line):
            item.bullets.append(match[1].strip())
        else:
            item.more.append(line)

    def bullet(self, number: int, text: str) -> None:
        if self.section == "budget":
            if match := CAP.match(text):
                self.caps[match[1]] = _value(match[2])
        elif self.memory:
            notes = len(self.phases[-1].notes)
            self.count(f"phases[{len(self.phases) - 1}].memory", notes, MAX_NOTES, number)
            self.item = _Item(number, title=text.strip())
            self.phases[-1].notes.append(self.item)
        else:
            self.item = None
            self.paragraph(f"- {text}")

    def paragraph(self, line: str) -> None:
        if self.section == "preamble" and (self.context or line):
            self.context.append(line)
        elif self.section == "phase" and (self.phases[-1].description or line):
            self.phases[-1].description.append(line)

    def count(self, what: str, count: int, limit: int, number: int) -> None:
        """Stop at the first item past a limit: what follows could only be refused too, and
        reading megabytes of it would hold the server up."""
        if count >= limit:
            kind = what.rpartition(".")[2]
            message = f"more than {limit} {kind}: reading stopped at line {number}"
            problem = Problem(path=f"$.{what}", message=message, line=number)
            raise DocumentInvalid([problem], "the Markdown checklist")

    def decode(self, number: int, body: str) -> dict[str, Any]:
        try:
            fields = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            self.problems.append(Problem(path="$", message=f"invalid comment: {exc}", line=number))
            return {}
        if not isinstance(fields, dict):
            self.problems.append(
                Problem(path="$", message="a comment holds an object", line=number)
            )
            return {}
        return fields


def _value(text: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


def _text(lines: list[str]) -> str:
    return "\n".join(lines).strip("\n")


def _phase_ids(reader: _Reader) -> list[str]:
    given = {p.fields["id"] for p in reader.phases if isinstance(p.fields.get("id"), str)}
    ids: list[str] = []
    counter = 0
    for phase in reader.phases:
        ident = phase.fields.get("id")
        if not isinstance(ident, str):
            counter += 1
            while f"phase-{counter}" in given:
                counter += 1
            ident = f"phase-{counter}"
        ids.append(ident)
    return ids


def _entry(item: _Item, phase_ids: list[str]) -> dict[str, Any]:
    fields = dict(item.fields)
    fields.pop("n", None)
    if "content" not in fields:
        fields["content"] = "\n".join([item.title, *item.more])
    if item.done:
        fields["status"] = "completed"
    elif fields.get("status", "completed") == "completed":
        fields.pop("status", None)
    spec = fields.get("spec")
    shown = {"requirements": "\n".join(item.quote), "acceptance_criteria": item.bullets}
    if spec is None and (item.quote or item.bullets):
        fields["spec"] = shown
    elif isinstance(spec, dict) and not {"text", "acceptance"} & set(spec):
        # (A version 1 spec in the comment is mapped whole, by ``documents.upgraded``.)
        fields["spec"] = {**shown, **spec}
    if item.phase is not None:
        fields["phase_id"] = phase_ids[item.phase]
    return fields


def _ordered(items: list[_Item]) -> list[_Item]:
    """Items by the ``n`` their comments carry (the document's order, when the checklist
    groups entries by phase in another); an item without one stays after the one before."""
    keyed = []
    last = -1
    for position, item in enumerate(items):
        n = item.fields.get("n")
        if isinstance(n, int) and not isinstance(n, bool):
            last = n
            keyed.append(((n, 0, position), item))
        else:
            keyed.append(((last, 1, position), item))
    return [item for _, item in sorted(keyed, key=lambda k: k[0])]


def parse(text: str) -> tuple[dict[str, Any], dict[str, int], list[Problem]]:
    """The document as decoded JSON, the Markdown line each entry and phase came from (by
    JSON path), and the problems of the Markdown itself (comments that are not JSON)."""
    reader = _Reader()
    reader.read(text)
    phase_ids = _phase_ids(reader)
    raw: dict[str, Any] = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **reader.header}
    raw.setdefault("project_context", _text(reader.context))
    if reader.caps:
        raw["budget"] = {"caps": reader.caps}
    lines: dict[str, int] = {}
    phases = []
    for i, (phase, ident) in enumerate(zip(reader.phases, phase_ids, strict=True)):
        lines[f"$.phases[{i}]"] = phase.line
        fields = {"id": ident, "name": phase.name, **phase.fields}
        fields.setdefault("description", _text(phase.description))
        notes = []
        for j, note in enumerate(phase.notes):
            lines[f"$.phases[{i}].memory[{j}]"] = note.line
            notes.append({"text": note.title, **note.fields})
        if notes:
            fields["memory"] = notes
        phases.append(fields)
    entries = []
    for i, item in enumerate(_ordered(reader.entries)):
        lines[f"$.entries[{i}]"] = item.line
        entries.append(_entry(item, phase_ids))
    raw["phases"], raw["entries"] = phases, entries
    return raw, lines, reader.problems


def is_checklist(text: str) -> bool:
    """Whether the text is a TODO checklist at all (the header, or a checkbox), before any
    of it is read into a document."""
    return CHECKLIST.search(text) is not None


def read(text: str, max_notes: int = MAX_NOTES) -> PlanDocument:
    """The document a Markdown checklist holds, or ``DocumentInvalid`` listing every problem
    (with the line it is on)."""
    raw, lines, found = parse(text)
    try:
        document = validate(raw, max_notes)
    except DocumentInvalid as invalid:
        found += invalid.problems
    else:
        if not found:
            return document
    raise DocumentInvalid([_located(p, lines) for p in found], "the Markdown checklist")


def _located(problem: Problem, lines: dict[str, int]) -> Problem:
    if problem.line is not None:
        return problem
    path = problem.path
    while path and path not in lines:
        path = path[: max(path.rfind("."), path.rfind("["), 0)]
    return msgspec.structs.replace(problem, line=lines.get(path))
