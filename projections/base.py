"""What a projection is: a name, and pure functions from an event to Redis writes.

Read models live in Redis, so ``apply`` does not fold into an in-memory view: it returns the
writes that fold the event into the stored view. The runner executes them together with the
checkpoint in one atomic step.
"""

from typing import Protocol, runtime_checkable

from orchestrator.events import StoredEvent
from orchestrator.keys import WorkspaceKeys

Word = str | bytes | int | float
Command = tuple[Word, ...]


class Projection(Protocol):
    name: str

    def apply(self, keys: WorkspaceKeys, event: StoredEvent) -> list[Command]:
        """The writes that fold ``event`` into this read model (none when irrelevant)."""
        ...

    def drop(self, keys: WorkspaceKeys) -> list[Command]:
        """The writes that delete this read model, before a rebuild."""
        ...


@runtime_checkable
class BatchProjection(Projection, Protocol):
    """A projection that can also fold many events at once, for less than one at a time."""

    def apply_batch(self, keys: WorkspaceKeys, events: list[StoredEvent]) -> list[Command]:
        """The writes of ``apply`` for each event, in order, merged per key where that keeps
        the result (the runner merges nothing more, only cuts commands that are too long)."""
        ...
