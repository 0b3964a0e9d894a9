"""How the command line shows things to people: colours, tables, the plan as a tree, event
lines, a progress bar. Scripts use ``--json`` instead, which bypasses all of this."""

import json
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, TextIO

from orchestrator import results as r
from orchestrator.model import Entry
from orchestrator_sdk.sse import Event

CODES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}
STATUS_COLOURS = {
    "completed": "green",
    "active": "cyan",
    "in_progress": "cyan",
    "dispatched": "blue",
    "verifying": "blue",
    "awaiting_input": "magenta",
    "failed": "red",
    "blocked": "red",
    "cancelled": "dim",
    "ok": "green",
    "error": "red",
}
TYPE_COLOURS = {
    "todo.": "green",
    "executor.": "cyan",
    "lease.": "blue",
    "lock.": "blue",
    "question.": "magenta",
    "budget.": "red",
    "usage.": "yellow",
    "phase.": "yellow",
    "tool.": "dim",
    "orchestration.": "red",
}
# The payload fields that say what an event is about, in the order they are shown.
SUMMARY_FIELDS = (
    "entryID",
    "phaseID",
    "leaseID",
    "sessionID",
    "agentName",
    "tool",
    "status",
    "from",
    "to",
    "reason",
    "outcome",
    "scope",
    "cap",
    "limit",
    "spent",
    "cost_usd",
    "tokens",
    "passed",
    "patch",
    "id",
    "text",
    "files",
    "purged",
    "jobID",
)


def colour_wanted(stream: TextIO) -> bool:
    """Colour on a terminal, unless ``NO_COLOR`` is set; ``FORCE_COLOR`` forces it."""
    if os.environ.get("NO_COLOR"):
        return False
    return bool(os.environ.get("FORCE_COLOR")) or stream.isatty()


class Painter:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, colour: str | None) -> str:
        if not self.enabled or colour is None:
            return text
        return f"\033[{CODES[colour]}m{text}\033[0m"

    def status(self, status: str) -> str:
        return self(status, STATUS_COLOURS.get(status))


def epoch_ms(value: int | None) -> str:
    if value is None:
        return ""
    return datetime.fromtimestamp(value / 1000).strftime("%Y-%m-%d %H:%M:%S")


def clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: Sequence[Sequence[str]], header: Sequence[str], widths: Sequence[int]) -> str:
    """Columns as wide as their widest cell, up to ``widths`` (0: unbounded)."""
    cells = [[clip(c, w) if w else c for c, w in zip(row, widths, strict=True)] for row in rows]
    sizes = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(header)]
    lines = [header, *cells]
    return "\n".join(
        "  ".join(c.ljust(s) for c, s in zip(line, sizes, strict=True)).rstrip() for line in lines
    )


def log_table(page: r.LogPage) -> str:
    rows = [
        (
            epoch_ms(c.timestamp),
            c.tool,
            c.status,
            c.sessionID,
            c.agentName,
            c.entryID or "",
            f"{c.duration}",
            c.title or c.target or "",
        )
        for c in page.items
    ]
    header = ("time", "tool", "status", "session", "agent", "entry", "ms", "title")
    widths = (0, 24, 12, 24, 20, 28, 0, 48)
    meta = page.meta
    footer = f"page {meta.page} of {meta.pages}, {meta.total} calls"
    return (table(rows, header, widths) + "\n" if rows else "no tool calls\n") + footer


def summary(payload: dict[str, Any]) -> str:
    parts = []
    for name in SUMMARY_FIELDS:
        value = payload.get(name)
        if value is None or value == [] or value == "":
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = json.dumps(value, separators=(",", ":"))
        parts.append(f"{name}={clip(str(value), 60)}")
    return " ".join(parts)


def event_line(event: Event, paint: Painter) -> str:
    colour = next((c for prefix, c in TYPE_COLOURS.items() if event.type.startswith(prefix)), None)
    return f"{paint(f'{event.seq:>7}', 'dim')}  {paint(f'{event.type:<22}', colour)} " + summary(
        event.payload
    )


STATUS_MARKS = {
    "completed": "x",
    "failed": "!",
    "blocked": "#",
    "cancelled": "-",
    "in_progress": ">",
    "dispatched": ">",
    "verifying": "?",
    "awaiting_input": "?",
}


def todo_tree(todo: r.TodoDocument, paint: Painter) -> str:
    """The plan: phases by seq, each with its entries as a tree by ``children``; the
    entries of no phase last. An entry's dependencies are on the line below it."""
    entries = {e.id: e for e in todo.entries}
    nested = {child for e in todo.entries for child in e.children if child in entries}
    lines = [
        paint(f"TODO {todo.id or '(empty)'}", "bold") + f"  version {todo.version}",
    ]
    if todo.project_context:
        lines.append(paint(clip(todo.project_context, 100), "dim"))
    groups: list[tuple[str | None, str]] = [
        (p.id, f"Phase {p.name} ({p.id}) [{paint.status(p.status)}]") for p in todo.phases
    ]
    groups.append((None, "No phase"))
    for phase_id, title in groups:
        roots = [e for e in todo.entries if e.phase_id == phase_id and e.id not in nested]
        if not roots and phase_id is None:
            continue
        lines.append(title)
        lines.extend(_branches(roots, entries, paint, "", set()))
    if not todo.entries:
        lines.append("no entries")
    return "\n".join(lines)


def _branches(
    level: list[Entry], entries: dict[str, Entry], paint: Painter, indent: str, seen: set[str]
) -> Iterator[str]:
    for i, entry in enumerate(level):
        last = i == len(level) - 1
        yield indent + ("└── " if last else "├── ") + _entry_line(entry, paint)
        below = indent + ("    " if last else "│   ")
        if entry.depends_on:
            after = ", ".join(_dependency(d, entries, paint) for d in entry.depends_on)
            yield below + paint("after ", "dim") + after
        if entry.id in seen:
            continue  # children that loop back are shown once
        seen.add(entry.id)
        children = [entries[c] for c in entry.children if c in entries]
        yield from _branches(children, entries, paint, below, seen)


def _entry_line(entry: Entry, paint: Painter) -> str:
    mark = STATUS_MARKS.get(entry.status, " ")
    who = f"  ({entry.assigned_to})" if entry.assigned_to else ""
    # The default priority goes without saying; the others are worth a glance.
    urgency = "" if entry.priority == "medium" else f" {paint(entry.priority, 'bold')}"
    return (
        f"[{mark}] {paint.status(entry.status)}{urgency} {paint(entry.id, 'dim')}  "
        f"{clip(entry.content, 80)}{who}"
    )


def _dependency(entry_id: str, entries: dict[str, Entry], paint: Painter) -> str:
    found = entries.get(entry_id)
    return entry_id if found is None else f"{entry_id} ({paint.status(found.status)})"


def progress_bar(percent: int, stage: str, width: int = 30) -> str:
    done = max(0, min(width, percent * width // 100))
    return f"[{'#' * done}{'.' * (width - done)}] {percent:>3}% {stage}"


def print_progress(percent: int, stage: str, stream: TextIO = sys.stderr) -> None:
    stream.write("\r" + progress_bar(percent, stage).ljust(70))
    stream.flush()
