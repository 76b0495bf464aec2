"""``SqliteSagaStore``: the default saga store, one SQLite file.

Every call runs in a worker thread (``anyio.to_thread``) so the event loop never blocks on
disk. One connection is shared behind a lock; every write runs in ``BEGIN IMMEDIATE``, so
processes sharing the file take turns (which also makes ``claim_due`` safe between them). The
file is in WAL mode so ``streamlib saga`` can read it while a service writes.
``synchronous=NORMAL`` survives a killed process; pass ``synchronous="FULL"`` to survive power
loss too.
"""

from __future__ import annotations

import builtins
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import orjson

from .store import (
    DedupeRecord,
    HistoryEntry,
    OutboxMessage,
    SagaRecord,
    SagaState,
    StaleSagaError,
    StoreTransaction,
    record_from_row,
    states_of,
)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sagas (
    id TEXT PRIMARY KEY, saga TEXT NOT NULL, state TEXT NOT NULL, step INTEGER NOT NULL,
    data BLOB NOT NULL, wait TEXT NOT NULL, command_id TEXT, deadline REAL,
    attempt INTEGER NOT NULL, error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    owner TEXT, lease_until REAL, fence INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sagas_state ON sagas (state);
CREATE TABLE IF NOT EXISTS saga_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, saga_id TEXT NOT NULL, at REAL NOT NULL,
    event TEXT NOT NULL, step TEXT, detail TEXT
);
CREATE INDEX IF NOT EXISTS saga_history_id ON saga_history (saga_id, seq);
CREATE TABLE IF NOT EXISTS saga_dedupe (
    key TEXT PRIMARY KEY, outcome TEXT NOT NULL, body BLOB NOT NULL, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS saga_dedupe_at ON saga_dedupe (at);
CREATE TABLE IF NOT EXISTS saga_outbox (
    command_id TEXT PRIMARY KEY, destination TEXT NOT NULL, key TEXT, headers BLOB NOT NULL,
    body BLOB NOT NULL, created_at REAL NOT NULL, claimed_until REAL NOT NULL DEFAULT 0,
    sent_at REAL
);
"""

_LEASE_COLUMNS = (
    ("owner", "TEXT"),
    ("lease_until", "REAL"),
    ("fence", "INTEGER NOT NULL DEFAULT 0"),
)
"""Added to files written before sagas had leases."""

_UNFINISHED = "state IN ('running', 'compensating')"

_COLUMNS = (
    "id, saga, state, step, data, wait, command_id, deadline, attempt, error, created_at, "
    "updated_at, owner, lease_until, fence"
)


def _row(record: SagaRecord) -> tuple[Any, ...]:
    return (
        record.id,
        record.saga,
        record.state.value,
        record.step,
        orjson.dumps(record.data),
        record.wait.value,
        record.command_id,
        record.deadline,
        record.attempt,
        record.error,
        record.created_at,
        record.updated_at,
        record.owner,
        record.lease_until,
        record.fence,
    )


class SqliteSagaStore:
    """A ``SagaStore`` in the SQLite file ``path`` (created with its tables when missing)."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"unknown synchronous mode {synchronous!r}")
        self.path = Path(path)
        self._synchronous = synchronous.upper()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
            present = {row[1] for row in conn.execute("PRAGMA table_info(sagas)")}
            for name, kind in _LEASE_COLUMNS:
                if name not in present:
                    conn.execute(f"ALTER TABLE sagas ADD COLUMN {name} {kind}")
            self._conn = conn
        return self._conn

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await anyio.to_thread.run_sync(self._tx, fn)

    @staticmethod
    def _insert_entry(conn: sqlite3.Connection, entry: HistoryEntry | None) -> None:
        if entry is not None:
            conn.execute(
                "INSERT INTO saga_history (saga_id, at, event, step, detail) VALUES (?,?,?,?,?)",
                (entry.saga_id, entry.at, entry.event, entry.step, entry.detail),
            )

    async def create(self, record: SagaRecord, entry: HistoryEntry | None = None) -> None:
        def do(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    f"INSERT INTO sagas ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    _row(record),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"saga {record.id} exists") from None
            self._insert_entry(conn, entry)

        await self._run(do)

    async def update(self, record: SagaRecord, entry: HistoryEntry | None = None) -> None:
        def do(conn: sqlite3.Connection) -> None:
            row = _row(record)
            release = ", owner=NULL, lease_until=NULL" if record.owner is None else ""
            cur = conn.execute(
                "UPDATE sagas SET saga=?, state=?, step=?, data=?, wait=?, command_id=?, "
                f"deadline=?, attempt=?, error=?, created_at=?, updated_at=?{release} "
                "WHERE id=? AND fence=?",
                (*row[1:12], record.id, record.fence),
            )
            if cur.rowcount != 1:
                if conn.execute("SELECT 1 FROM sagas WHERE id=?", (record.id,)).fetchone():
                    raise StaleSagaError(record.id)
                raise KeyError(record.id)
            self._insert_entry(conn, entry)

        await self._run(do)

    async def claim(self, saga_id: str, owner: str, until: float, now: float) -> SagaRecord | None:
        def do(conn: sqlite3.Connection) -> SagaRecord | None:
            conn.execute(
                "UPDATE sagas SET owner=?, lease_until=?, fence=fence+1 WHERE id=? AND "
                f"{_UNFINISHED} AND (owner IS NULL OR owner=? OR lease_until < ?)",
                (owner, until, saga_id, owner, now),
            )
            row = conn.execute(f"SELECT {_COLUMNS} FROM sagas WHERE id=?", (saga_id,)).fetchone()
            return record_from_row(row) if row else None

        return await self._run(do)

    async def claim_due(
        self, owner: str, until: float, now: float, limit: int = 100
    ) -> builtins.list[SagaRecord]:
        def do(conn: sqlite3.Connection) -> builtins.list[SagaRecord]:
            ids = [
                row[0]
                for row in conn.execute(
                    f"SELECT id FROM sagas WHERE {_UNFINISHED} AND ((owner IS NULL AND "
                    "(wait='run' OR deadline <= ?)) OR (owner IS NOT NULL AND lease_until < ?)) "
                    "ORDER BY created_at, id LIMIT ?",
                    (now, now, limit),
                )
            ]
            found = []
            for saga_id in ids:
                conn.execute(
                    "UPDATE sagas SET owner=?, lease_until=?, fence=fence+1 WHERE id=?",
                    (owner, until, saga_id),
                )
                row = conn.execute(f"SELECT {_COLUMNS} FROM sagas WHERE id=?", (saga_id,))
                found.append(record_from_row(row.fetchone()))
            return found

        return await self._run(do)

    async def renew(self, owner: str, saga_ids: Sequence[str], until: float) -> set[str]:
        def do(conn: sqlite3.Connection) -> set[str]:
            renewed = set()
            for saga_id in saga_ids:
                cur = conn.execute(
                    "UPDATE sagas SET lease_until=? WHERE id=? AND owner=?", (until, saga_id, owner)
                )
                if cur.rowcount == 1:
                    renewed.add(saga_id)
            return renewed

        return await self._run(do)

    async def expire_leases(self, owner: str) -> int:
        def do(conn: sqlite3.Connection) -> int:
            return conn.execute("UPDATE sagas SET lease_until=0 WHERE owner=?", (owner,)).rowcount

        return await self._run(do)

    async def get(self, saga_id: str) -> SagaRecord | None:
        def do(conn: sqlite3.Connection) -> SagaRecord | None:
            row = conn.execute(f"SELECT {_COLUMNS} FROM sagas WHERE id=?", (saga_id,)).fetchone()
            return record_from_row(row) if row else None

        return await self._run(do)

    async def list(
        self, state: SagaState | Sequence[SagaState] | None = None, saga: str | None = None
    ) -> builtins.list[SagaRecord]:
        states = states_of(state)
        where: list[str] = []
        params: list[Any] = []
        if states is not None:
            where.append(f"state IN ({','.join('?' * len(states))})")
            params.extend(s.value for s in states)
        if saga is not None:
            where.append("saga=?")
            params.append(saga)
        sql = f"SELECT {_COLUMNS} FROM sagas"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id"

        def do(conn: sqlite3.Connection) -> builtins.list[SagaRecord]:
            return [record_from_row(r) for r in conn.execute(sql, params).fetchall()]

        return await self._run(do)

    async def append_history(self, entry: HistoryEntry) -> None:
        await self._run(lambda conn: self._insert_entry(conn, entry))

    async def history(self, saga_id: str) -> builtins.list[HistoryEntry]:
        def do(conn: sqlite3.Connection) -> builtins.list[HistoryEntry]:
            rows = conn.execute(
                "SELECT saga_id, event, step, detail, at FROM saga_history WHERE saga_id=? "
                "ORDER BY seq",
                (saga_id,),
            ).fetchall()
            return [HistoryEntry(*row) for row in rows]

        return await self._run(do)

    async def get_dedupe(self, key: str) -> DedupeRecord | None:
        def do(conn: sqlite3.Connection) -> DedupeRecord | None:
            row = conn.execute(
                "SELECT key, outcome, body, at FROM saga_dedupe WHERE key=?", (key,)
            ).fetchone()
            return DedupeRecord(row[0], row[1], bytes(row[2]), row[3]) if row else None

        return await self._run(do)

    async def put_dedupe(self, record: DedupeRecord) -> bool:
        def do(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO saga_dedupe (key, outcome, body, at) VALUES (?,?,?,?)",
                (record.key, record.outcome, record.body, record.at),
            )
            return cur.rowcount == 1

        return await self._run(do)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTransaction]:
        def begin() -> sqlite3.Connection:
            self._lock.acquire()
            try:
                conn = self._connect()
                conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                self._lock.release()
                raise
            return conn

        def end(conn: sqlite3.Connection, verb: str) -> None:
            try:
                conn.execute(verb)
            finally:
                self._lock.release()

        conn = await anyio.to_thread.run_sync(begin)
        try:
            yield _SqliteTransaction(conn)
        except BaseException:
            await anyio.to_thread.run_sync(end, conn, "ROLLBACK")
            raise
        await anyio.to_thread.run_sync(end, conn, "COMMIT")

    async def claim_outbox(
        self, now: float, until: float, limit: int = 100
    ) -> builtins.list[OutboxMessage]:
        def do(conn: sqlite3.Connection) -> builtins.list[OutboxMessage]:
            rows = conn.execute(
                "SELECT command_id, destination, key, headers, body, created_at FROM saga_outbox "
                "WHERE sent_at IS NULL AND claimed_until < ? ORDER BY created_at LIMIT ?",
                (now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE saga_outbox SET claimed_until=? WHERE command_id=?",
                [(until, row[0]) for row in rows],
            )
            return [
                OutboxMessage(r[0], r[1], r[2], orjson.loads(r[3]), bytes(r[4]), r[5]) for r in rows
            ]

        return await self._run(do)

    async def mark_sent(self, command_ids: Sequence[str], at: float) -> None:
        def do(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE saga_outbox SET sent_at=? WHERE command_id=?",
                [(at, command_id) for command_id in command_ids],
            )

        await self._run(do)

    async def prune(self, before: float) -> int:
        def do(conn: sqlite3.Connection) -> int:
            old = f"SELECT id FROM sagas WHERE NOT {_UNFINISHED} AND updated_at < ?"
            count = conn.execute(
                f"DELETE FROM saga_history WHERE saga_id IN ({old})", (before,)
            ).rowcount
            count += conn.execute(
                f"DELETE FROM sagas WHERE NOT {_UNFINISHED} AND updated_at < ?",
                (before,),
            ).rowcount
            count += conn.execute("DELETE FROM saga_dedupe WHERE at < ?", (before,)).rowcount
            count += conn.execute(
                "DELETE FROM saga_outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (before,)
            ).rowcount
            return count

        return await self._run(do)

    def close(self) -> None:
        """Close the connection (it reopens on next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.close)


class _SqliteTransaction:
    """A ``StoreTransaction`` on the store's connection, inside ``BEGIN IMMEDIATE``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @property
    def connection(self) -> Any:
        return self._conn

    async def execute(self, sql: str, *args: Any) -> None:
        await anyio.to_thread.run_sync(self._conn.execute, sql, args)

    async def fetch(self, sql: str, *args: Any) -> builtins.list[tuple[Any, ...]]:
        def do() -> builtins.list[tuple[Any, ...]]:
            return [tuple(row) for row in self._conn.execute(sql, args).fetchall()]

        return await anyio.to_thread.run_sync(do)

    async def put_dedupe(self, record: DedupeRecord) -> bool:
        def do() -> bool:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO saga_dedupe (key, outcome, body, at) VALUES (?,?,?,?)",
                (record.key, record.outcome, record.body, record.at),
            )
            return cur.rowcount == 1

        return await anyio.to_thread.run_sync(do)

    async def put_outbox(self, message: OutboxMessage, claimed_until: float = 0.0) -> None:
        await anyio.to_thread.run_sync(
            self._conn.execute,
            "INSERT INTO saga_outbox (command_id, destination, key, headers, body, created_at, "
            "claimed_until) VALUES (?,?,?,?,?,?,?)",
            (
                message.command_id,
                message.destination,
                message.key,
                orjson.dumps(message.headers),
                message.body,
                message.created_at,
                claimed_until,
            ),
        )
