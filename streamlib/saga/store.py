"""The saga store: saga records, their history, leases, participants' de-duplication records
and reply outbox.

``SagaStore`` is a Protocol; ``MemorySagaStore`` keeps everything in a dict (tests, demos),
``SqliteSagaStore`` in a file (the default) and ``PostgresSagaStore`` in PostgreSQL (several
orchestrator processes). Each ``create``/``update`` writes the record and its history entry
together, so the history never disagrees with the state.

Ownership: an orchestrator instance works on a saga only while it holds its lease (``owner``,
``lease_until``). Every claim increments the record's ``fence``; ``update`` writes only when the
stored fence is still the one the caller read, so an instance whose lease was taken over can
never write over the newer owner (``StaleSagaError``).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import orjson

from ..errors import StreamlibError


class StaleSagaError(StreamlibError):
    """An update of a saga whose lease another instance took over since it was read."""

    def __init__(self, saga_id: str) -> None:
        self.saga_id = saga_id
        super().__init__(f"saga {saga_id}: its lease was taken over by another instance")


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
    PROBE = "probe"
    """The outcome of the step is unknown (its reply never came): its probe is asked again at
    ``deadline``; a late reply to ``command_id`` still counts."""


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
    owner: str | None = None
    """The orchestrator instance holding the lease, None while nobody works on the saga."""
    lease_until: float | None = None
    fence: int = 0
    """Incremented by every claim; ``update`` refuses a record read under an older fence."""

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


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A participant's reply, written with its work and sent by the relay after commit."""

    command_id: str
    destination: str
    key: str | None
    headers: dict[str, str]
    body: bytes
    created_at: float = field(default_factory=time.time)


class StoreTransaction(Protocol):
    """One database transaction of a participant: its own statements (in the store's SQL
    dialect: ``?`` placeholders on SQLite, ``$1`` on PostgreSQL) and its answer commit
    together."""

    @property
    def connection(self) -> Any:
        """The driver's connection (sqlite3.Connection, asyncpg.Connection), inside the
        transaction."""

    async def execute(self, sql: str, *args: Any) -> None:
        """Run a statement."""

    async def fetch(self, sql: str, *args: Any) -> builtins.list[tuple[Any, ...]]:
        """Run a query and return its rows."""

    async def put_dedupe(self, record: DedupeRecord) -> bool:
        """Store ``record`` unless its key exists; False means another delivery of the command
        answered first and the transaction is to be rolled back."""

    async def put_outbox(self, message: OutboxMessage, claimed_until: float = 0.0) -> None:
        """Queue ``message``; a relay sends it once the transaction committed and
        ``claimed_until`` passed (the writer sends it itself meanwhile)."""


@runtime_checkable
class SagaStore(Protocol):
    """Where sagas and de-duplication records live. Every method may be called concurrently
    from one event loop; implementations keep each call atomic."""

    async def create(self, record: SagaRecord, entry: HistoryEntry | None = None) -> None:
        """Store a new saga (and its first history entry); ValueError if the id exists."""

    async def update(self, record: SagaRecord, entry: HistoryEntry | None = None) -> None:
        """Replace a saga's record and append ``entry``, in one transaction, if the stored
        ``fence`` is ``record.fence`` (StaleSagaError otherwise; KeyError if there is no such
        saga). The lease is kept as stored, or released when ``record.owner`` is None."""

    async def claim(self, saga_id: str, owner: str, until: float, now: float) -> SagaRecord | None:
        """Take the lease of an unfinished saga that nobody holds (or whose lease expired
        before ``now``) until ``until``, incrementing its fence. Returns the record as it is
        then: ``record.owner == owner`` when claimed; None if there is no such saga."""

    async def claim_due(
        self, owner: str, until: float, now: float, limit: int = 100
    ) -> builtins.list[SagaRecord]:
        """Claim up to ``limit`` unfinished sagas that need work: unheld ones whose deadline
        passed or that wait to run, and held ones whose lease expired (their owner died).
        Concurrent callers never get the same saga (``FOR UPDATE SKIP LOCKED`` or a write
        lock)."""

    async def renew(self, owner: str, saga_ids: Sequence[str], until: float) -> set[str]:
        """Extend the leases ``owner`` still holds; the ids renewed."""

    async def expire_leases(self, owner: str) -> int:
        """End every lease of ``owner`` at once (a restarted instance with the same id takes
        its sagas back without waiting); how many."""

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

    def transaction(self) -> AbstractAsyncContextManager[StoreTransaction]:
        """A transaction for a participant's work, de-duplication record and outbox reply;
        committed when the block ends, rolled back when it raises. Inside it, use only the
        transaction: SQLite's store waits for it to end before any other call."""

    async def claim_outbox(
        self, now: float, until: float, limit: int = 100
    ) -> builtins.list[OutboxMessage]:
        """Unsent outbox messages not claimed by another relay (or whose claim expired),
        claimed until ``until``, oldest first."""

    async def mark_sent(self, command_ids: Sequence[str], at: float) -> None:
        """Record that the outbox messages were sent."""

    async def prune(self, before: float) -> int:
        """Delete finished sagas (and their history) last updated before ``before``, and
        de-duplication records and sent outbox messages older than it; how many rows."""

    async def aclose(self) -> None:
        """Release resources."""


def record_from_row(row: Sequence[Any]) -> SagaRecord:
    """The record in a row of the SQL stores' ``sagas`` table, its columns in schema order."""
    return SagaRecord(
        id=row[0],
        saga=row[1],
        state=SagaState(row[2]),
        step=row[3],
        data=orjson.loads(row[4]),
        wait=Wait(row[5]),
        command_id=row[6],
        deadline=row[7],
        attempt=row[8],
        error=row[9],
        created_at=row[10],
        updated_at=row[11],
        owner=row[12],
        lease_until=row[13],
        fence=row[14],
    )


def claimable(record: SagaRecord, owner: str, now: float) -> bool:
    """Whether ``owner`` may claim ``record`` at ``now``."""
    if record.state.is_final:
        return False
    return record.owner is None or record.owner == owner or (record.lease_until or 0) < now


def due(record: SagaRecord, now: float) -> bool:
    """Whether an unfinished saga needs an instance to work on it at ``now``."""
    if record.state.is_final:
        return False
    if record.owner is None:
        return record.wait is Wait.RUN or (record.deadline is not None and record.deadline <= now)
    return (record.lease_until or 0) < now


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
        self._outbox: dict[str, tuple[OutboxMessage, float, float | None]] = {}
        """command id -> (message, claimed until, sent at)"""

    async def create(self, record: SagaRecord, entry: HistoryEntry | None = None) -> None:
        if record.id in self._records:
            raise ValueError(f"saga {record.id} exists")
        self._records[record.id] = record
        self._history[record.id] = [entry] if entry else []

    async def update(self, record: SagaRecord, entry: HistoryEntry | None = None) -> None:
        stored = self._records.get(record.id)
        if stored is None:
            raise KeyError(record.id)
        if stored.fence != record.fence:
            raise StaleSagaError(record.id)
        if record.owner is None:
            record = replace(record, lease_until=None)
        else:
            record = replace(record, owner=stored.owner, lease_until=stored.lease_until)
        self._records[record.id] = record
        if entry:
            self._history[record.id].append(entry)

    def _claim(self, record: SagaRecord, owner: str, until: float) -> SagaRecord:
        record = replace(record, owner=owner, lease_until=until, fence=record.fence + 1)
        self._records[record.id] = record
        return record

    async def claim(self, saga_id: str, owner: str, until: float, now: float) -> SagaRecord | None:
        record = self._records.get(saga_id)
        if record is None or not claimable(record, owner, now):
            return record
        return self._claim(record, owner, until)

    async def claim_due(
        self, owner: str, until: float, now: float, limit: int = 100
    ) -> builtins.list[SagaRecord]:
        found = [r for r in self._records.values() if due(r, now)][:limit]
        return [self._claim(r, owner, until) for r in found]

    async def renew(self, owner: str, saga_ids: Sequence[str], until: float) -> set[str]:
        renewed = set()
        for saga_id in saga_ids:
            record = self._records.get(saga_id)
            if record is not None and record.owner == owner:
                self._records[saga_id] = replace(record, lease_until=until)
                renewed.add(saga_id)
        return renewed

    async def expire_leases(self, owner: str) -> int:
        mine = [r for r in self._records.values() if r.owner == owner]
        for record in mine:
            self._records[record.id] = replace(record, lease_until=0.0)
        return len(mine)

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

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTransaction]:
        tx = _MemoryTransaction(self)
        yield tx
        # Nothing awaits between the checks of put_dedupe and here: the commit is atomic.
        for record in tx.dedupe:
            self._dedupe[record.key] = record
        for message, claimed_until in tx.outbox:
            self._outbox[message.command_id] = (message, claimed_until, None)

    async def claim_outbox(
        self, now: float, until: float, limit: int = 100
    ) -> builtins.list[OutboxMessage]:
        found = [m for m, claimed, sent in self._outbox.values() if sent is None and claimed < now][
            :limit
        ]
        for message in found:
            self._outbox[message.command_id] = (message, until, None)
        return found

    async def mark_sent(self, command_ids: Sequence[str], at: float) -> None:
        for command_id in command_ids:
            message, claimed, _ = self._outbox[command_id]
            self._outbox[command_id] = (message, claimed, at)

    async def prune(self, before: float) -> int:
        old = [r.id for r in self._records.values() if r.state.is_final and r.updated_at < before]
        count = 0
        for saga_id in old:
            del self._records[saga_id]
            count += 1 + len(self._history.pop(saga_id, []))
        for key in [k for k, d in self._dedupe.items() if d.at < before]:
            del self._dedupe[key]
            count += 1
        for key in [
            k for k, (_, _, sent) in self._outbox.items() if sent is not None and sent < before
        ]:
            del self._outbox[key]
            count += 1
        return count

    async def aclose(self) -> None:
        return None


class _MemoryTransaction:
    """A ``StoreTransaction`` of ``MemorySagaStore``: buffers the answer until commit."""

    def __init__(self, store: MemorySagaStore) -> None:
        self._store = store
        self.dedupe: list[DedupeRecord] = []
        self.outbox: list[tuple[OutboxMessage, float]] = []

    @property
    def connection(self) -> Any:
        return None

    async def execute(self, sql: str, *args: Any) -> None:
        raise NotImplementedError("MemorySagaStore runs no SQL")

    async def fetch(self, sql: str, *args: Any) -> builtins.list[tuple[Any, ...]]:
        raise NotImplementedError("MemorySagaStore runs no SQL")

    async def put_dedupe(self, record: DedupeRecord) -> bool:
        if record.key in self._store._dedupe or any(d.key == record.key for d in self.dedupe):
            return False
        self.dedupe.append(record)
        return True

    async def put_outbox(self, message: OutboxMessage, claimed_until: float = 0.0) -> None:
        self.outbox.append((message, claimed_until))
