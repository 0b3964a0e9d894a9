"""Operator commands on a running server, through the SDK: ``tail``, ``log``, ``questions``,
``todo``, ``dump``, ``purge``, ``export`` and ``import``.

Every command takes ``--url`` ($ORCH_URL, default http://127.0.0.1:8000), ``--workspace``
($ORCH_WORKSPACE) and ``--token`` ($ORCH_TOKEN); every read command takes ``--json``. Errors
are one line on stderr, and the exit code says which kind (``EXIT_CODES``).
"""

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeAlias

import msgspec

from orchestrator.events import QuestionItem, QuestionOption
from orchestrator.ids import is_valid_id
from orchestrator_sdk import render
from orchestrator_sdk.client import Client
from orchestrator_sdk.errors import ApiError, ServerError, UnexpectedResponse, Unreachable
from orchestrator_sdk.sse import Event, Reset

OK, API_ERROR, USAGE, UNREACHABLE, INTERNAL, INTERRUPTED = 0, 1, 2, 3, 70, 130
DEFAULT_URL = "http://127.0.0.1:8000"
PROG = "orchestrator"
EXIT_CODES = f"""exit codes (every error is one line on stderr):
  {OK:<3}  done
  {API_ERROR:<3}  refused: the server answered 4xx, no such token, or an import or the demo failed
  {USAGE:<3}  usage: bad arguments or ORCH_* settings (an invalid workspace id included), a
       file that cannot be read or written, a question nobody is at the terminal to answer
  {UNREACHABLE:<3}  unavailable: the server or Redis cannot be reached or failed (5xx, an answer
       that does not decode), or `serve` could not start
  {INTERNAL:<3}  a bug: the message names the exception; `orchestrator --log-level DEBUG`
       shows the traceback
  {INTERRUPTED:<3}  interrupted (Ctrl-C)"""

Command = Callable[[Client, argparse.Namespace], int]
# Any: the parsers are `Parser`, and the action is invariant in their type.
Subcommands: TypeAlias = "argparse._SubParsersAction[Any]"


class UsageError(Exception):
    """The command line asks for something that cannot be done as asked."""


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line like every other error (the usage itself
    is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        where = f"{command}: " if command else ""
        self.exit(USAGE, f"{PROG}: {where}{message} (see {self.prog} --help)\n")


def workspace_id(value: str) -> str:
    """An argument type: a workspace id as the service accepts it."""
    if not is_valid_id(value):
        raise argparse.ArgumentTypeError(
            f"invalid workspace id {value!r}: 1 to 64 of A-Z a-z 0-9 _ -"
        )
    return value


def positive(value: str) -> float:
    """An argument type: a number above 0 (seconds, a speed)."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value!r}")
    return seconds


class Failed(Exception):
    """The request went through but what it started failed (an import)."""


def fail(message: str) -> None:
    """``message`` as the one line an error is on stderr."""
    print(f"{PROG}: {' '.join(message.splitlines())}", file=sys.stderr)


def api_message(exc: ApiError) -> str:
    details = ""
    if exc.details:
        details = " " + render.clip(json.dumps(exc.details, separators=(",", ":")), 300)
    return f"{exc.status} {exc.code}: {exc.message}{details}"


def run(command: Command) -> Callable[[argparse.Namespace, object], int]:
    """The handler of a command: a client for its options, and errors as exit codes."""

    def handler(args: argparse.Namespace, settings: object = None) -> int:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
        try:
            if not args.workspace:
                raise UsageError("no workspace: pass --workspace or set ORCH_WORKSPACE")
            with Client(args.url, args.workspace, args.token, timeout=args.timeout) as client:
                return command(client, args)
        except UsageError as exc:
            fail(str(exc))
            return USAGE
        except Failed as exc:
            fail(str(exc))
            return API_ERROR
        except ApiError as exc:
            fail(api_message(exc))
            return UNREACHABLE if isinstance(exc, ServerError) else API_ERROR
        except (Unreachable, UnexpectedResponse) as exc:
            fail(f"cannot reach {args.url}: {exc}" if isinstance(exc, Unreachable) else str(exc))
            return UNREACHABLE
        except KeyboardInterrupt:
            return INTERRUPTED
        except BrokenPipeError:
            # The reader went away (`orchestrator tail | head`): stop quietly.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return OK

    return handler


def emit_json(value: object) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    sys.stdout.flush()


def show(value: object, as_json: bool, text: Callable[[], str]) -> None:
    """``value`` as one line of JSON for scripts, else as ``text()`` for people."""
    if as_json:
        emit_json(value)
    else:
        print(text())


# Commands


def tail(client: Client, args: argparse.Namespace) -> int:
    client.healthz()  # unreachable: fail now, rather than retry the stream forever
    paint = render.Painter(render.colour_wanted(sys.stdout))
    prefixes = tuple(args.type or ())
    shown = 0
    with client.stream_events(since_seq=args.since) as stream:
        try:
            for item in stream:
                if isinstance(item, Reset):
                    _reset(item, args.json)
                elif isinstance(item, Event) and item.type.startswith(prefixes or ("",)):
                    if args.json:
                        emit_json(item)
                    else:
                        print(render.event_line(item, paint), flush=True)
                    shown += 1
                    if args.limit and shown >= args.limit:
                        return OK
        except KeyboardInterrupt:
            if stream.last_seq is not None:
                print(f"\nresume with --since {stream.last_seq}", file=sys.stderr)
            raise
    return OK


def _reset(reset: Reset, as_json: bool) -> None:
    if as_json:
        emit_json({"seq": reset.seq, "type": "reset", "payload": msgspec.to_builtins(reset)})
    print(
        f"{PROG}: the log was reset ({reset.reason}): events {reset.since_seq + 1}.."
        f"{reset.seq} are gone; continuing after seq {reset.seq}",
        file=sys.stderr,
    )


def log(client: Client, args: argparse.Namespace) -> int:
    page = client.get_log(
        page=args.page,
        limit=args.limit,
        tool=args.tool,
        status=args.status,
        session_id=args.session,
        agent_name=args.agent,
        entry_id=args.entry,
        call_id=args.call,
        container_id=args.container,
        from_=args.from_,
        to=args.to,
        order=args.order,
    )
    show(page, args.json, lambda: render.log_table(page))
    return OK


def questions(client: Client, args: argparse.Namespace) -> int:
    pending = client.questions_list()
    if args.json:
        emit_json(pending)
        return OK
    for q in pending.questions:
        expiry = f", expires {render.epoch_ms(q.expires_at)}" if q.expires_at else ""
        print(f"{q.id}  from {q.sessionID}{expiry}")
        for item in q.questions:
            print(f"  {item.header}: {item.question}")
            for n, option in enumerate(item.options, 1):
                print(f"    {n}) {_option(option)}")
    if not pending.questions:
        print("no pending questions")
    return OK


def answer(client: Client, args: argparse.Namespace) -> int:
    question = client.questions_get_detail(args.question_id).question
    items = question.questions
    if args.answers is not None:
        answers = _parse_answers(args.answers, len(items))
    elif args.answer:
        if len(items) != 1 and len(args.answer) != len(items):
            raise UsageError(
                f"{question.id} asks {len(items)} questions: give --answer once per question "
                "(in order), or --answers as JSON"
            )
        answers = [list(args.answer)] if len(items) == 1 else [[a] for a in args.answer]
    else:
        answers = [_ask(i, len(items), item) for i, item in enumerate(items)]
    result = client.questions_answer(question.id, answers)
    show(result, args.json, lambda: f"answered {question.id}")
    return OK


def _option(option: QuestionOption) -> str:
    return f"{option.label} - {option.description}" if option.description else option.label


def _parse_answers(raw: str, count: int) -> list[list[str]]:
    try:
        return msgspec.json.decode(raw, type=list[list[str]])
    except msgspec.DecodeError as exc:
        raise UsageError(
            f"--answers must be a JSON array of {count} arrays of labels: {exc}"
        ) from None


def _ask(index: int, count: int, item: QuestionItem) -> list[str]:
    """Pick labels by number on stdin (or type one's own where ``custom``)."""
    print(f"\nQuestion {index + 1} of {count}: {item.header}\n{item.question}")
    for n, option in enumerate(item.options, 1):
        print(f"  {n}) {_option(option)}")
    hint = "one or more numbers, comma-separated" if item.multiple else "a number"
    hint += ", or your own answer" if item.custom else ""
    while True:
        try:
            line = input(f"Answer ({hint}): ").strip()
        except EOFError:
            raise UsageError("no answer given (stdin ended); use --answer") from None
        labels = _pick(line, item)
        if labels:
            return labels
        print("not an option; try again", file=sys.stderr)


def _pick(line: str, item: QuestionItem) -> list[str] | None:
    parts = [p.strip() for p in line.split(",")] if item.multiple else [line]
    if parts and all(p.isdigit() and 1 <= int(p) <= len(item.options) for p in parts):
        return [item.options[int(p) - 1].label for p in parts]
    return [line] if item.custom and line else None


def reject(client: Client, args: argparse.Namespace) -> int:
    result = client.questions_reject(args.question_id, reason=args.reason)
    show(result, args.json, lambda: f"rejected {args.question_id}")
    return OK


def todo(client: Client, args: argparse.Namespace) -> int:
    document = client.get_todo()
    if args.json:
        emit_json(document)
    else:
        print(render.todo_tree(document, render.Painter(render.colour_wanted(sys.stdout))))
    return OK


def dump(client: Client, args: argparse.Namespace) -> int:
    body = msgspec.json.format(msgspec.json.encode(client.get_debug_dump()), indent=2) + b"\n"
    return _write(body, args.output)


def _write(body: bytes, output: str | None) -> int:
    if output is None or output == "-":
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    else:
        try:
            Path(output).write_bytes(body)
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror}") from exc
        print(f"wrote {len(body)} bytes to {output}", file=sys.stderr)
    return OK


def purge(client: Client, args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("purge asks for confirmation: pass --yes when not on a terminal")
        prompt = (
            f"Purge workspace {client.workspace} on {client.base_url}? Its TODO, events, "
            "budgets, tool logs and questions are deleted (the config is kept). [y/N] "
        )
        if input(prompt).strip().lower() not in ("y", "yes"):
            print("not purged", file=sys.stderr)
            return OK
    result = client.purge()
    show(result, args.json, lambda: "purged: " + ", ".join(result.purged))
    return OK


def export(client: Client, args: argparse.Namespace) -> int:
    if args.format == "markdown" and args.json:
        raise UsageError("--json and --format markdown: choose one")
    if args.format == "markdown":
        return _write(client.export_todo_markdown().encode(), args.output)
    document = msgspec.json.encode(client.export_todo())
    return _write(msgspec.json.format(document, indent=2) + b"\n", args.output)


def import_(client: Client, args: argparse.Namespace) -> int:
    if [args.file, args.repo, args.snapshot].count(None) != 2:
        raise UsageError("import from exactly one of: FILE, --repo URL, --snapshot ID")
    accepted = client.start_import(
        repo_url=args.repo,
        ref=args.ref,
        path=args.path,
        document=None if args.file is None else _document(args.file),
        snapshot_id=args.snapshot,
    )
    if args.no_wait:
        show(accepted, args.json, lambda: f"import {accepted.importJobID} started")
        return OK
    bar = sys.stderr.isatty() and not args.json
    job = client.get_import(accepted.importJobID)
    while job.status == "running":
        if bar:
            render.print_progress(job.progress, job.stage)
        time.sleep(args.poll)
        job = client.get_import(accepted.importJobID)
    if bar:
        render.print_progress(job.progress, job.status)
        print(file=sys.stderr)
    if args.json:
        emit_json(job)
    if job.status == "failed":
        problems = "; ".join(f"{p.path}: {p.message}" for p in job.problems[:5])
        raise Failed(f"import {job.id} failed: {job.error}" + (f" ({problems})" * bool(problems)))
    if not args.json:
        print(f"imported into {job.todoID} ({job.id})")
    return OK


def _document(file: str) -> dict[str, Any] | str:
    """A JSON document as an object; anything else (a Markdown checklist) as text."""
    raw = sys.stdin.read() if file == "-" else _read(file)
    if file.endswith((".md", ".markdown")) or not raw.lstrip().startswith("{"):
        return raw
    try:
        return msgspec.json.decode(raw, type=dict[str, Any])
    except msgspec.DecodeError as exc:
        raise UsageError(f"{file} is not valid JSON: {exc}") from exc


def _read(file: str) -> str:
    try:
        return Path(file).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from exc


# The parser


def connection(parser: argparse.ArgumentParser, nested: bool = False) -> None:
    """``--url``, ``--workspace``, ``--token``, ``--timeout``. A nested parser's defaults
    are suppressed, so they do not overwrite what its parent parsed."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if nested else value

    group = parser.add_argument_group("server")
    group.add_argument(
        "--url", default=default(os.environ.get("ORCH_URL", DEFAULT_URL)), help="$ORCH_URL"
    )
    group.add_argument(
        "--workspace",
        "-w",
        type=workspace_id,
        default=default(os.environ.get("ORCH_WORKSPACE") or None),
        help="$ORCH_WORKSPACE",
    )
    group.add_argument("--token", default=default(os.environ.get("ORCH_TOKEN")), help="$ORCH_TOKEN")
    group.add_argument(
        "--timeout", type=positive, default=default(30.0), help="seconds per request (default 30)"
    )


def command(
    commands: Subcommands, name: str, handler: Command, summary: str, json_flag: bool = True
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=summary, description=summary)
    connection(parser)
    if json_flag:
        parser.add_argument("--json", action="store_true", help="JSON for scripts")
    parser.set_defaults(handler=run(handler))
    return parser


def seq(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError("a seq is a whole number >= 0")
    return int(value)


def moment(value: str) -> int:
    """Epoch milliseconds, or an ISO 8601 time (local unless it says otherwise)."""
    if value.isdigit():
        return int(value)
    try:
        return int(datetime.fromisoformat(value).timestamp() * 1000)
    except ValueError:
        raise argparse.ArgumentTypeError("epoch ms or an ISO time, e.g. 2025-01-31T12:00") from None


def add_commands(commands: Subcommands) -> None:
    """The client commands, on the ``orchestrator`` command's subcommands."""
    t = command(commands, "tail", tail, "live events, coloured on a terminal")
    t.add_argument("--since", type=seq, help="replay every event after this seq first")
    t.add_argument(
        "--type", action="append", help="only types starting with this, e.g. todo. (repeatable)"
    )
    t.add_argument("--limit", "-n", type=int, help="stop after this many events")

    lg = command(commands, "log", log, "query the tool-call log")
    for flag, help_ in (
        ("--tool", "tool"),
        ("--status", "status (ok, error, ...)"),
        ("--session", "sessionID"),
        ("--agent", "agentName"),
        ("--entry", "entryID"),
        ("--call", "callID"),
        ("--container", "container_id"),
    ):
        lg.add_argument(flag, help=f"only calls with this {help_}")
    lg.add_argument("--from", dest="from_", type=moment, help="at or after (epoch ms, ISO time)")
    lg.add_argument("--to", type=moment, help="at or before (epoch ms, ISO time)")
    lg.add_argument("--page", type=int, help="page, from 1")
    lg.add_argument("--limit", type=int, help="calls per page (default 50, max 500)")
    lg.add_argument("--order", choices=["asc", "desc"], help="by time (default asc)")

    q = command(commands, "questions", questions, "pending questions; answer or reject one")
    actions = q.add_subparsers(dest="action", metavar="{answer,reject}")
    a = actions.add_parser("answer", help="answer a question: pick options by number")
    a.add_argument("question_id")
    a.add_argument("--answer", action="append", help="a label, non-interactively (repeatable)")
    a.add_argument("--answers", help='every answer as JSON, e.g. [["a"],["b","c"]]')
    a.set_defaults(handler=run(answer))
    r = actions.add_parser("reject", help="dismiss a question")
    r.add_argument("question_id")
    r.add_argument("--reason")
    r.set_defaults(handler=run(reject))
    for leaf in (a, r):
        connection(leaf, nested=True)
        leaf.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    command(commands, "todo", todo, "the plan as a tree, with statuses")

    d = command(commands, "dump", dump, "the debug dump (JSON), to stdout or a file")
    d.add_argument("--output", "-o", help="write it to this file")

    p = command(commands, "purge", purge, "clear the workspace but its config", json_flag=False)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="JSON for scripts")

    e = command(commands, "export", export, "the TODO as a portable document")
    e.add_argument("--format", choices=["json", "markdown"], default="json")
    e.add_argument("--output", "-o", help="write it to this file")

    i = command(commands, "import", import_, "import a TODO document; waits with a progress bar")
    i.add_argument("file", nargs="?", help="a document: JSON, or a Markdown checklist (- : stdin)")
    i.add_argument("--repo", help="a git repository URL to find the document in")
    i.add_argument("--ref", help="with --repo: a branch or tag")
    i.add_argument("--path", help="with --repo: the document's file")
    i.add_argument("--snapshot", help="a vault snapshot id of this workspace")
    i.add_argument("--no-wait", action="store_true", help="start it and exit")
    i.add_argument("--poll", type=positive, default=0.25, help=argparse.SUPPRESS)


def unexpected(exc: Exception) -> int:
    """A bug, in one line like every other error; the traceback goes to the debug log."""
    logging.getLogger(__name__).debug("unexpected error", exc_info=exc)
    fail(f"unexpected {type(exc).__name__}: {render.clip(str(exc), 300)} (a bug: please report it)")
    return INTERNAL


def main(argv: list[str] | None = None) -> int:
    """The client commands alone (``python -m orchestrator_sdk``): no server dependencies."""
    parser = Parser(
        prog=PROG,
        description=__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args, None)
    except Exception as exc:
        return unexpected(exc)
    return code
