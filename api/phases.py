"""Phases, their memory and verify, prompt dispatch, and sessions."""

from starlette.requests import Request
from starlette.responses import Response

from api import commands, decode
from api.responses import JSON
from api.state import services
from orchestrator import phases
from orchestrator import results as r
from orchestrator.rules import phase_of
from projections.plan import read_memory
from projections.sessions import read_sessions


async def list_phases(request: Request) -> Response:
    return JSON(r.Phases(phases=(await commands.plan(request)).ordered_phases()))


async def create_phase(request: Request) -> Response:
    raw = await decode.body(request)
    given = decode.decode(raw, phases.PhaseInput)
    return await commands.run(
        request, "phase", raw, lambda plan, now: phases.decide_create(plan, given, now), 201
    )


def _phase_id(request: Request) -> str:
    return decode.path_id(request, "phaseID")


async def get_phase(request: Request) -> Response:
    return JSON(r.PhaseBody(phase=phase_of(await commands.plan(request), _phase_id(request))))


async def patch_phase(request: Request) -> Response:
    phase_id = _phase_id(request)
    return await commands.with_body(
        request,
        phases.PhasePatch,
        f"phase:{phase_id}",
        lambda plan, given, now: phases.decide_update(plan, phase_id, given, now),
    )


async def verify(request: Request) -> Response:
    phase_id = _phase_id(request)
    return await commands.run(
        request,
        f"verify:{phase_id}",
        b"",
        lambda plan, now: phases.decide_verify(plan, phase_id, now),
    )


async def get_memory(request: Request) -> Response:
    phase_id = _phase_id(request)
    phase = phase_of(await commands.plan(request), phase_id)
    ws = decode.path_id(request, "workspaceID")
    notes = await read_memory(services(request).redis, ws, phase.id)
    limit = services(request).settings.max_memory_notes
    return JSON(r.Memory(notes=notes, count=len(notes), limit=limit))


async def add_memory(request: Request) -> Response:
    phase_id = _phase_id(request)
    raw = await decode.body(request)
    given = decode.decode(raw, phases.MemoryInput)
    limit = services(request).settings.max_memory_notes
    return await commands.run(
        request,
        f"memory:{phase_id}",
        raw,
        lambda plan, now: phases.decide_memory(plan, phase_id, given, now, limit),
        201,
    )


async def prompt_phase(request: Request) -> Response:
    phase_id = _phase_id(request)
    raw = await decode.body(request)
    given = decode.decode(raw, phases.PromptInput)
    given = phases.PromptInput(
        text=given.text, sessionID=given.sessionID, entryID=given.entryID, phaseID=phase_id
    )
    return await commands.run(
        request,
        f"prompt:{phase_id}",
        raw,
        lambda plan, now: phases.decide_prompt(plan, given, None, now),
        201,
    )


async def prompt_session(request: Request) -> Response:
    session_id = decode.session_id(request)
    raw = await decode.body(request)
    given = decode.decode(raw, phases.PromptInput)
    return await commands.run(
        request,
        f"session-prompt:{session_id}",  # not "prompt:": a phase id may equal a session id
        raw,
        lambda plan, now: phases.decide_prompt(plan, given, session_id, now),
        201,
    )


async def list_sessions(request: Request) -> Response:
    plan = await commands.plan(request)
    ws = decode.path_id(request, "workspaceID")
    return JSON(await read_sessions(services(request).redis, ws, plan))
