"""The saga store: saga records, their history, and participants' de-duplication records.

``SagaStore`` is a small Protocol; ``MemorySagaStore`` keeps everything in a dict (tests, demos)
and ``SqliteSagaStore`` in a file (the default). Each ``create``/``update`` writes the record and
its history entry together, so the history never disagrees with the state.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class SagaState(StrEnum):
    """Where a saga is; the last three are final."""

    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    NEEDS_ATTENTION = "needs_attention"

    @property
    def is_final(self) -> bool:
        return self in (SagaState.COMPLETED, SagaState.COMPENSATED, SagaState.NEEDS_ATTENTION)


class Wait(StrEnum):
    """What the current step (or compensation) of an unfinished saga waits for."""

    RUN = "run"
    """Nothing: it is to be run now (or was running when the orchestrator stopped)."""
    REPLY = "reply"
    """The reply to ``command_id``, until ``deadline``."""
    RETRY = "retry"
    """The back-off before the next attempt, until ``deadline``."""


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """One saga instance as stored. ``step`` indexes the saga's steps: the step being run
    while ``running``, the step being compensated while ``compensating``."""

    id: str
    saga: str
    state: SagaState
    step: int
    data: dict[str, Any]
    wait: Wait = Wait.RUN
    command_id: str | None = None
    deadline: float | None = None
    attempt: int = 0
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def evolve(self, **changes: Any) -> SagaRecord:
        """A copy with ``changes`` applied and ``updated_at`` set to now."""
        changes.setdefault("updated_at", time.time())
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One line of a saga's history: what happened, to which step, when."""

    saga_id: str
    event: str
    step: str | None = None
    detail: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class DedupeRecord:
    """A participant's answer to one command, kept to answer duplicates the same way."""

    key: str
    outcome: str
    body: bytes
    at: float = field(default_factory=time.time)


@runtime_checkable
class SagaStore(Protocol):
    """Where sagas and de-duplication records live. Every method may be called concurrently
    from one event loop; implementations keep each call atomic."""

    async def create(self, record: SagaRecord, entry: HistoryEntry | None = None) -> None:
        """Store a new saga (and its first history entry); ValueError if the id exists."""

    async def update(self, record: SagaRecord, entry: HistoryEntry | None = None) -> None:
        """Replace a saga's record and append ``entry``, in one transaction."""

    async def get(self, saga_id: str) -> SagaRecord | None:
        """The saga ``saga_id``, or None."""

    async def list(
        self, state: SagaState | Sequence[SagaState] | None = None, saga: str | None = None
    ) -> builtins.list[SagaRecord]:
        """Sagas (oldest first), optionally only those in ``state`` or of type ``saga``."""

    async def append_history(self, entry: HistoryEntry) -> None:
        """Add a history entry without changing the record."""

    async def history(self, saga_id: str) -> builtins.list[HistoryEntry]:
        """The saga's history, oldest first."""

    async def get_dedupe(self, key: str) -> DedupeRecord | None:
        """The de-duplication record ``key``, or None."""

    async def put_dedupe(self, record: DedupeRecord) -> bool:
        """Store ``record`` unless one with its key exists; True when stored."""

    async def aclose(self) -> None:
        """Release resources."""


def states_of(state: SagaState | Sequence[SagaState] | None) -> tuple[SagaState, ...] | None:
    if state is None:
        return None
    if isinstance(state, SagaState):
        return (state,)
    return tuple(state)


class MemorySagaStore:
    """A ``SagaStore`` in memory: for tests and single-process demos."""

    def __init__(self) -> None:
        self._records: dict[str, SagaRecord] = {}
        self._history: dict[str, list[HistoryEntry]] = {}
        self._dedupe: dict[str, DedupeRecord] = {}

    async def create(self, record: SagaRecord, entry: HistoryEntry | None = None) -> None:
        if record.id in self._records:
            raise ValueError(f"saga {record.id} exists")
        self._records[record.id] = record
        self._history[record.id] = [entry] if entry else []

    async def update(self, record: SagaRecord, entry: HistoryEntry | None = None) -> None:
        if record.id not in self._records:
            raise KeyError(record.id)
        self._records[record.id] = record
        if entry:
            self._history[record.id].append(entry)

    async def get(self, saga_id: str) -> SagaRecord | None:
        return self._records.get(saga_id)

    async def list(
        self, state: SagaState | Sequence[SagaState] | None = None, saga: str | None = None
    ) -> builtins.list[SagaRecord]:
        states = states_of(state)
        return sorted(
            (
                r
                for r in self._records.values()
                if (states is None or r.state in states) and (saga is None or r.saga == saga)
            ),
            key=lambda r: r.created_at,
        )

    async def append_history(self, entry: HistoryEntry) -> None:
        self._history.setdefault(entry.saga_id, []).append(entry)

    async def history(self, saga_id: str) -> builtins.list[HistoryEntry]:
        return list(self._history.get(saga_id, ()))

    async def get_dedupe(self, key: str) -> DedupeRecord | None:
        return self._dedupe.get(key)

    async def put_dedupe(self, record: DedupeRecord) -> bool:
        if record.key in self._dedupe:
            return False
        self._dedupe[record.key] = record
        return True

    async def aclose(self) -> None:
        return None
