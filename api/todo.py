"""The Master TODO: the document, entries, status, rounds, priority, spec, budget."""

from starlette.requests import Request
from starlette.responses import Response

from api import commands, decode
from api.auth import token_name
from api.responses import JSON, raw_json
from api.state import services
from orchestrator import results as r
from orchestrator import todo
from orchestrator.rules import entry_of
from projections.plan import read_todo_events


async def get_todo(request: Request) -> Response:
    return JSON(todo.document(await commands.plan(request)))


async def patch_todo(request: Request) -> Response:
    raw = await decode.body(request)
    given = decode.decode(raw, todo.TodoInput)
    await commands.run(
        request, "todo", raw, lambda plan, now: todo.decide_update_todo(plan, given, now)
    )
    # The document's version is the seq the update was appended at (other events, such as
    # tool calls, take seqs too), so it is read back rather than guessed before the append.
    return await get_todo(request)


async def todo_events(request: Request) -> Response:
    ws = decode.path_id(request, "workspaceID")
    decode.only_params(request, {"since_seq", "limit"})
    since = decode.since_seq(request) or 0
    limit = decode.integer("limit", request.query_params.get("limit"), 100, 1, 1000)
    s = services(request)
    await s.views.current(ws)
    events = await read_todo_events(s.redis, ws, since, limit)
    return raw_json(b'{"events":[' + b",".join(events) + b"]}")


async def create_entries(request: Request) -> Response:
    return await commands.with_body(
        request,
        todo.EntriesInput,
        "entries",
        lambda plan, given, now: todo.decide_create(plan, given.entries, now, token_name(request)),
        status=201,
    )


def _entry_id(request: Request) -> str:
    return decode.path_id(request, "entryID")


async def get_entry(request: Request) -> Response:
    plan = await commands.plan(request)
    return JSON(r.EntryBody(entry=entry_of(plan, _entry_id(request))))


async def delete_entry(request: Request) -> Response:
    entry_id = _entry_id(request)
    decode.only_params(request, {"force"})
    force = decode.boolean("force", request.query_params.get("force"))
    return await commands.run(
        request,
        f"delete:{entry_id}",
        b"force" if force else b"",
        lambda plan, now: todo.decide_delete(plan, entry_id, force, now),
    )


async def patch_status(request: Request) -> Response:
    entry_id = _entry_id(request)
    return await commands.with_body(
        request,
        todo.StatusInput,
        f"status:{entry_id}",
        lambda plan, given, now: todo.decide_status(plan, entry_id, given, now),
    )


async def patch_rounds(request: Request) -> Response:
    entry_id = _entry_id(request)
    return await commands.with_body(
        request,
        todo.RoundsInput,
        f"rounds:{entry_id}",
        lambda plan, given, now: todo.decide_rounds(plan, entry_id, given, now),
    )


async def patch_priority(request: Request) -> Response:
    entry_id = _entry_id(request)
    return await commands.with_body(
        request,
        todo.PriorityInput,
        f"priority:{entry_id}",
        lambda plan, given, now: todo.decide_priority(plan, entry_id, given, now),
    )


async def patch_budget(request: Request) -> Response:
    entry_id = _entry_id(request)
    return await commands.with_body(
        request,
        todo.EntryBudgetInput,
        f"entry-budget:{entry_id}",
        lambda plan, given, now: todo.decide_budget(plan, entry_id, given, now),
    )


async def lock_budget(request: Request) -> Response:
    entry_id = _entry_id(request)
    return await commands.run(
        request,
        f"budget-lock:{entry_id}",
        b"",
        lambda plan, now: todo.decide_lock_budget(plan, entry_id, now),
    )


async def get_spec(request: Request) -> Response:
    entry = entry_of(await commands.plan(request), _entry_id(request))
    return JSON(r.SpecBody(spec=entry.spec, frozen=entry.spec_frozen, version=entry.version))


async def put_spec(request: Request) -> Response:
    entry_id = _entry_id(request)
    return await commands.with_body(
        request,
        todo.SpecInput,
        f"spec:{entry_id}",
        lambda plan, given, now: todo.decide_spec(plan, entry_id, given, now, token_name(request)),
    )


async def freeze_spec(request: Request) -> Response:
    entry_id = _entry_id(request)
    return await commands.run(
        request,
        f"freeze:{entry_id}",
        b"",
        lambda plan, now: todo.decide_freeze(plan, entry_id, now),
    )
