"""Phases, their memory, verify and prompts; agent sessions."""

from collections.abc import Sequence

from orchestrator import results as r
from orchestrator_sdk.inputs import NoteInput, PhaseStatus
from orchestrator_sdk.operations import Call, decoded, fields, operation

P = "/phases/{phaseID}"


class PhaseOperations:
    @operation("GET", "/phases")
    def list_phases(self) -> Call[r.Phases]:
        """Phases by seq."""
        return Call(read=decoded(r.Phases))

    @operation("POST", "/phases")
    def create_phase(
        self,
        name: str,
        *,
        phase_id: str | None = None,
        description: str | None = None,
        seq: int | None = None,
        status: PhaseStatus | None = None,
        phase_rounds: int | None = None,
        container_id: str | None = None,
        session_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Call[r.PhaseBody]:
        body = fields(
            id=phase_id,
            name=name,
            description=description,
            seq=seq,
            status=status,
            phase_rounds=phase_rounds,
            container_id=container_id,
            session_id=session_id,
        )
        return Call(read=decoded(r.PhaseBody), body=body, idempotency_key=idempotency_key)

    @operation("GET", P)
    def get_phase(self, phase_id: str) -> Call[r.PhaseBody]:
        return Call(read=decoded(r.PhaseBody), path={"phaseID": phase_id})

    @operation("PATCH", P)
    def update_phase(
        self,
        phase_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        seq: int | None = None,
        status: PhaseStatus | None = None,
        phase_rounds: int | None = None,
        container_id: str | None = None,
        session_id: str | None = None,
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Call[r.PhaseBody]:
        """Change what is given (a status change follows the phase status machine)."""
        body = fields(
            name=name,
            description=description,
            seq=seq,
            status=status,
            phase_rounds=phase_rounds,
            container_id=container_id,
            session_id=session_id,
            version=version,
        )
        return Call(
            read=decoded(r.PhaseBody),
            path={"phaseID": phase_id},
            body=body,
            idempotency_key=idempotency_key,
        )

    @operation("POST", f"{P}/verify")
    def verify_phase(
        self, phase_id: str, *, idempotency_key: str | None = None
    ) -> Call[r.Verified]:
        """Check the phase's entries against their acceptance criteria."""
        return Call(
            read=decoded(r.Verified), path={"phaseID": phase_id}, idempotency_key=idempotency_key
        )

    @operation("GET", f"{P}/memory")
    def get_phase_memory(self, phase_id: str) -> Call[r.Memory]:
        return Call(read=decoded(r.Memory), path={"phaseID": phase_id})

    @operation("POST", f"{P}/memory")
    def add_phase_memory(
        self,
        phase_id: str,
        notes: Sequence[str | NoteInput],
        *,
        idempotency_key: str | None = None,
    ) -> Call[r.NotesAdded]:
        """Add notes (a string is a note's text)."""
        given = [{"text": note} if isinstance(note, str) else note for note in notes]
        return Call(
            read=decoded(r.NotesAdded),
            path={"phaseID": phase_id},
            body={"notes": given},
            idempotency_key=idempotency_key,
        )

    @operation("POST", f"{P}/prompt")
    def prompt_phase(
        self,
        phase_id: str,
        text: str,
        *,
        session_id: str | None = None,
        entry_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Call[r.PromptBody]:
        """Send a prompt to the given session, else the phase's own."""
        return Call(
            read=decoded(r.PromptBody),
            path={"phaseID": phase_id},
            body=fields(text=text, sessionID=session_id, entryID=entry_id),
            idempotency_key=idempotency_key,
        )

    @operation("GET", "/sessions")
    def list_sessions(self) -> Call[r.Sessions]:
        """Every agent session seen in tool calls, questions, leases and prompts."""
        return Call(read=decoded(r.Sessions))

    @operation("POST", "/sessions/{sessionID}/prompt")
    def prompt_session(
        self,
        session_id: str,
        text: str,
        *,
        entry_id: str | None = None,
        phase_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Call[r.PromptBody]:
        return Call(
            read=decoded(r.PromptBody),
            path={"sessionID": session_id},
            body=fields(text=text, entryID=entry_id, phaseID=phase_id),
            idempotency_key=idempotency_key,
        )
