"""The one union of event types, and the envelope they travel in.

A stream entry holds ``type`` (the event type) and ``payload`` (its JSON), so that
``redis-cli XRANGE`` shows readable events. Schema evolution: new fields get defaults,
type names are never renamed, field types never change.
"""

from typing import Annotated, Any, ClassVar, Final

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Text = Annotated[str, msgspec.Meta(max_length=16_384)]
SessionID = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
Status = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class ToolCall(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    """One tool call made by an agent session; the payload of ``tool.call``."""

    type: ClassVar[str] = "tool.call"

    tool: Name
    sessionID: SessionID
    callID: Name
    entryID: Name | None = None
    title: Text | None = None
    timestamp: EpochMs
    duration: Annotated[int, msgspec.Meta(ge=0, le=2**53)]
    status: Status
    corrections: list[Any]
    target: Text | None = None
    agentName: Name
    container_id: Name | None = None
    workspaceID: str


class QuestionOption(msgspec.Struct, frozen=True, omit_defaults=False):
    label: Name
    description: Text = ""


class QuestionItem(msgspec.Struct, frozen=True):
    question: Text
    header: Annotated[str, msgspec.Meta(max_length=256)]
    options: Annotated[list[QuestionOption], msgspec.Meta(max_length=64)]
    multiple: bool = False
    custom: bool = False


class ToolRef(msgspec.Struct, frozen=True):
    messageID: Name
    callID: Name


class Question(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    """A question an agent asks a human; the payload of ``question.asked``.

    ``expires_at`` is present only on questions raised with ``expires_in_ms``.
    """

    type: ClassVar[str] = "question.asked"

    id: str
    sessionID: SessionID
    questions: list[QuestionItem]
    tool: ToolRef
    expires_at: EpochMs | None = None


class QuestionAnswered(msgspec.Struct, frozen=True):
    type: ClassVar[str] = "question.answered"

    id: str
    sessionID: str
    answers: list[list[str]]


class QuestionRejected(msgspec.Struct, frozen=True, omit_defaults=True):
    type: ClassVar[str] = "question.rejected"

    id: str
    sessionID: str
    reason: str | None = None


class QuestionExpired(msgspec.Struct, frozen=True):
    type: ClassVar[str] = "question.expired"

    id: str
    sessionID: str
    expires_at: int


class ConfigUpdated(msgspec.Struct, frozen=True):
    """``patch`` as sent (JSON Merge Patch) and the merged ``config`` it produced."""

    type: ClassVar[str] = "config.updated"

    patch: dict[str, Any]
    config: dict[str, Any]


class OrchestrationPurged(msgspec.Struct, frozen=True, omit_defaults=True):
    """Always the first event after a purge; seq continues from before it.

    ``config`` carries the kept config over the purge: the events that built it are gone,
    so a rebuild from the log must find it here.
    """

    type: ClassVar[str] = "orchestration.purged"

    purged: list[str]
    config: dict[str, Any] | None = None


Payload = (
    ToolCall
    | Question
    | QuestionAnswered
    | QuestionRejected
    | QuestionExpired
    | ConfigUpdated
    | OrchestrationPurged
)

PAYLOAD_TYPES: Final[dict[str, type[Payload]]] = {
    cls.type: cls
    for cls in (
        ToolCall,
        Question,
        QuestionAnswered,
        QuestionRejected,
        QuestionExpired,
        ConfigUpdated,
        OrchestrationPurged,
    )
}

_DECODERS: Final = {name: msgspec.json.Decoder(cls) for name, cls in PAYLOAD_TYPES.items()}
_ENCODER: Final = msgspec.json.Encoder()


class StoredEvent(msgspec.Struct, frozen=True):
    """An event as read back from the log: its seq, type and payload JSON (undecoded)."""

    seq: int
    type: str
    payload: msgspec.Raw

    def decode(self) -> Payload | None:
        """The typed payload, or None for a type this version does not know."""
        decoder = _DECODERS.get(self.type)
        return None if decoder is None else decoder.decode(self.payload)


class NewEvent(msgspec.Struct, frozen=True):
    """An event about to be appended. ``entities`` names what it changes (for versions)."""

    type: str
    payload: bytes
    entities: tuple[str, ...] = ()


def new_event(payload: Payload, *entities: str) -> NewEvent:
    return NewEvent(type=payload.type, payload=_ENCODER.encode(payload), entities=entities)


def encode(value: object) -> bytes:
    return _ENCODER.encode(value)
