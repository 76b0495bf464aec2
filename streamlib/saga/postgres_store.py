"""``PostgresSagaStore``: the saga store in PostgreSQL, shared by several orchestrator processes.

Needs ``asyncpg`` (``pip install 'streamlib[postgres]'``). The tables live in ``schema``
(created with them when missing; default ``public``), which is also the connections'
``search_path``, so a participant's own statements in a ``transaction()`` find its tables there
too. ``claim_due`` and ``claim_outbox`` select with ``FOR UPDATE SKIP LOCKED``: instances polling
at once never get the same saga or reply.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson

from ..config import redact_url
from ..errors import ConfigError
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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sagas (
    id TEXT PRIMARY KEY, saga TEXT NOT NULL, state TEXT NOT NULL, step INTEGER NOT NULL,
    data JSONB NOT NULL, wait TEXT NOT NULL, command_id TEXT, deadline DOUBLE PRECISION,
    attempt INTEGER NOT NULL, error TEXT, created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL, owner TEXT, lease_until DOUBLE PRECISION,
    fence BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sagas_unfinished ON sagas (created_at)
    WHERE state IN ('running', 'compensating');
CREATE INDEX IF NOT EXISTS sagas_state ON sagas (state, updated_at);
CREATE TABLE IF NOT EXISTS saga_history (
    seq BIGSERIAL PRIMARY KEY, saga_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
    event TEXT NOT NULL, step TEXT, detail TEXT
);
CREATE INDEX IF NOT EXISTS saga_history_id ON saga_history (saga_id, seq);
CREATE TABLE IF NOT EXISTS saga_dedupe (
    key TEXT PRIMARY KEY, outcome TEXT NOT NULL, body BYTEA NOT NULL,
    at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS saga_dedupe_at ON saga_dedupe (at);
CREATE TABLE IF NOT EXISTS saga_outbox (
    command_id TEXT PRIMARY KEY, destination TEXT NOT NULL, key TEXT, headers JSONB NOT NULL,
    body BYTEA NOT NULL, created_at DOUBLE PRECISION NOT NULL,
    claimed_until DOUBLE PRECISION NOT NULL DEFAULT 0, sent_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS saga_outbox_unsent ON saga_outbox (created_at) WHERE sent_at IS NULL;
"""

_COLUMNS = (
    "id, saga, state, step, data::text, wait, command_id, deadline, attempt, error, "
    "created_at, updated_at, owner, lease_until, fence"
)
_UNFINISHED = "state IN ('running', 'compensating')"
_SCHEMA_LOCK = 0x5A6A
"""Advisory lock key: processes starting at once create the tables one after the other."""


def _columns(record: SagaRecord) -> tuple[Any, ...]:
    """The values of the ``sagas`` columns ``id`` to ``updated_at``, in schema order."""
    return (
        record.id,
        record.saga,
        record.state.value,
        record.step,
        orjson.dumps(record.data).decode(),
        record.wait.value,
        record.command_id,
        record.deadline,
        record.attempt,
        record.error,
        record.created_at,
        record.updated_at,
    )


def _outbox(row: Any) -> OutboxMessage:
    return OutboxMessage(row[0], row[1], row[2], orjson.loads(row[3]), bytes(row[4]), row[5])


class PostgresSagaStore:
    """A ``SagaStore`` in the PostgreSQL database at ``url`` (``postgresql://...``)."""

    def __init__(
        self, url: str, *, schema: str = "public", min_size: int = 1, max_size: int = 10
    ) -> None:
        if not schema.replace("_", "").isalnum():
            raise ConfigError("saga.postgres.schema", f"{schema!r} is not a plain identifier")
        self.url = url
        self.schema = schema
        self._sizes = (min_size, max_size)
        self._pool: Any = None
        self._opening = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresSagaStore({redact_url(self.url)!r}, schema={self.schema!r})"

    async def _connected(self) -> Any:
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                try:
                    import asyncpg
                except ImportError as exc:
                    raise ConfigError(
                        "saga.store",
                        "PostgresSagaStore needs asyncpg: pip install 'streamlib[postgres]'",
                    ) from exc
                pool = await asyncpg.create_pool(
                    self.url,
                    min_size=self._sizes[0],
                    max_size=self._sizes[1],
                    server_settings={"search_path": self.schema},
                )
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                    await conn.execute(_SCHEMA)
                self._pool = pool
        return self._pool

    @staticmethod
    async def _insert_entry(conn: Any, entry: HistoryEntry | None) -> None:
        if entry is not None:
            await conn.execute(
                "INSERT INTO saga_history (saga_id, at, event, step, detail) "
                "VALUES ($1,$2,$3,$4,$5)",
                entry.saga_id,
                entry.at,
                entry.event,
                entry.step,
                entry.detail,
            )

    async def create(self, record: SagaRecord, entry: HistoryEntry | None = None) -> None:
        pool = await self._connected()
        async with pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO sagas (id, saga, state, step, data, wait, command_id, deadline, "
                "attempt, error, created_at, updated_at, owner, lease_until, fence) "
                "VALUES ($1,$2,$3,$4,$5::jsonb,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15) "
                "ON CONFLICT (id) DO NOTHING RETURNING 1",
                *_columns(record),
                record.owner,
                record.lease_until,
                record.fence,
            )
            if inserted is None:
                raise ValueError(f"saga {record.id} exists")
            await self._insert_entry(conn, entry)

    async def update(self, record: SagaRecord, entry: HistoryEntry | None = None) -> None:
        release = ", owner=NULL, lease_until=NULL" if record.owner is None else ""
        pool = await self._connected()
        async with pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE sagas SET saga=$2, state=$3, step=$4, data=$5::jsonb, wait=$6, "
                "command_id=$7, deadline=$8, attempt=$9, error=$10, created_at=$11, "
                f"updated_at=$12{release} WHERE id=$1 AND fence=$13",
                *_columns(record),
                record.fence,
            )
            if status != "UPDATE 1":
                if await conn.fetchval("SELECT 1 FROM sagas WHERE id=$1", record.id):
                    raise StaleSagaError(record.id)
                raise KeyError(record.id)
            await self._insert_entry(conn, entry)

    async def claim(self, saga_id: str, owner: str, until: float, now: float) -> SagaRecord | None:
        pool = await self._connected()
        async with pool.acquire() as conn:
            row = await conn.fetchrow(
                "UPDATE sagas SET owner=$2, lease_until=$3, fence=fence+1 WHERE id=$1 AND "
                f"{_UNFINISHED} AND (owner IS NULL OR owner=$2 OR lease_until < $4) "
                f"RETURNING {_COLUMNS}",
                saga_id,
                owner,
                until,
                now,
            )
            if row is None:
                row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM sagas WHERE id=$1", saga_id)
        return record_from_row(row) if row else None

    async def claim_due(
        self, owner: str, until: float, now: float, limit: int = 100
    ) -> builtins.list[SagaRecord]:
        pool = await self._connected()
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "UPDATE sagas SET owner=$1, lease_until=$2, fence=fence+1 WHERE id IN ("
                f"SELECT id FROM sagas WHERE {_UNFINISHED} AND ((owner IS NULL AND "
                "(wait='run' OR deadline <= $3)) OR (owner IS NOT NULL AND lease_until < $3)) "
                "ORDER BY created_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) "
                f"RETURNING {_COLUMNS}",
                owner,
                until,
                now,
                limit,
            )
        return sorted((record_from_row(r) for r in rows), key=lambda r: (r.created_at, r.id))

    async def renew(self, owner: str, saga_ids: Sequence[str], until: float) -> set[str]:
        pool = await self._connected()
        rows = await pool.fetch(
            "UPDATE sagas SET lease_until=$3 WHERE id = ANY($1::text[]) AND owner=$2 RETURNING id",
            list(saga_ids),
            owner,
            until,
        )
        return {r[0] for r in rows}

    async def expire_leases(self, owner: str) -> int:
        pool = await self._connected()
        status = await pool.execute("UPDATE sagas SET lease_until=0 WHERE owner=$1", owner)
        return int(status.split()[-1])

    async def get(self, saga_id: str) -> SagaRecord | None:
        pool = await self._connected()
        row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM sagas WHERE id=$1", saga_id)
        return record_from_row(row) if row else None

    async def list(
        self, state: SagaState | Sequence[SagaState] | None = None, saga: str | None = None
    ) -> builtins.list[SagaRecord]:
        states = states_of(state)
        where: builtins.list[str] = []
        params: builtins.list[Any] = []
        if states is not None:
            params.append([s.value for s in states])
            where.append(f"state = ANY(${len(params)}::text[])")
        if saga is not None:
            params.append(saga)
            where.append(f"saga = ${len(params)}")
        sql = f"SELECT {_COLUMNS} FROM sagas"
        if where:
            sql += " WHERE " + " AND ".join(where)
        pool = await self._connected()
        rows = await pool.fetch(sql + " ORDER BY created_at, id", *params)
        return [record_from_row(r) for r in rows]

    async def append_history(self, entry: HistoryEntry) -> None:
        pool = await self._connected()
        async with pool.acquire() as conn:
            await self._insert_entry(conn, entry)

    async def history(self, saga_id: str) -> builtins.list[HistoryEntry]:
        pool = await self._connected()
        rows = await pool.fetch(
            "SELECT saga_id, event, step, detail, at FROM saga_history WHERE saga_id=$1 "
            "ORDER BY seq",
            saga_id,
        )
        return [HistoryEntry(*row) for row in rows]

    async def get_dedupe(self, key: str) -> DedupeRecord | None:
        pool = await self._connected()
        row = await pool.fetchrow(
            "SELECT key, outcome, body, at FROM saga_dedupe WHERE key=$1", key
        )
        return DedupeRecord(row[0], row[1], bytes(row[2]), row[3]) if row else None

    async def put_dedupe(self, record: DedupeRecord) -> bool:
        pool = await self._connected()
        async with pool.acquire() as conn:
            return await _put_dedupe(conn, record)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTransaction]:
        pool = await self._connected()
        async with pool.acquire() as conn, conn.transaction():
            yield _PostgresTransaction(conn)

    async def claim_outbox(
        self, now: float, until: float, limit: int = 100
    ) -> builtins.list[OutboxMessage]:
        pool = await self._connected()
        rows = await pool.fetch(
            "UPDATE saga_outbox SET claimed_until=$2 WHERE command_id IN ("
            "SELECT command_id FROM saga_outbox WHERE sent_at IS NULL AND claimed_until < $1 "
            "ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED) "
            "RETURNING command_id, destination, key, headers::text, body, created_at",
            now,
            until,
            limit,
        )
        return sorted((_outbox(r) for r in rows), key=lambda m: m.created_at)

    async def mark_sent(self, command_ids: Sequence[str], at: float) -> None:
        pool = await self._connected()
        await pool.execute(
            "UPDATE saga_outbox SET sent_at=$2 WHERE command_id = ANY($1::text[])",
            list(command_ids),
            at,
        )

    async def prune(self, before: float) -> int:
        pool = await self._connected()
        count = 0
        async with pool.acquire() as conn, conn.transaction():
            for sql in (
                f"DELETE FROM saga_history WHERE saga_id IN (SELECT id FROM sagas WHERE NOT "
                f"{_UNFINISHED} AND updated_at < $1)",
                f"DELETE FROM sagas WHERE NOT {_UNFINISHED} AND updated_at < $1",
                "DELETE FROM saga_dedupe WHERE at < $1",
                "DELETE FROM saga_outbox WHERE sent_at IS NOT NULL AND sent_at < $1",
            ):
                status = await conn.execute(sql, before)
                count += int(status.split()[-1])
        return count

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


async def _put_dedupe(conn: Any, record: DedupeRecord) -> bool:
    inserted = await conn.fetchval(
        "INSERT INTO saga_dedupe (key, outcome, body, at) VALUES ($1,$2,$3,$4) "
        "ON CONFLICT (key) DO NOTHING RETURNING 1",
        record.key,
        record.outcome,
        record.body,
        record.at,
    )
    return inserted is not None


class _PostgresTransaction:
    """A ``StoreTransaction`` on one pooled connection inside a transaction."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @property
    def connection(self) -> Any:
        return self._conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> builtins.list[tuple[Any, ...]]:
        return [tuple(row) for row in await self._conn.fetch(sql, *args)]

    async def put_dedupe(self, record: DedupeRecord) -> bool:
        return await _put_dedupe(self._conn, record)

    async def put_outbox(self, message: OutboxMessage, claimed_until: float = 0.0) -> None:
        await self._conn.execute(
            "INSERT INTO saga_outbox (command_id, destination, key, headers, body, created_at, "
            "claimed_until) VALUES ($1,$2,$3,$4::jsonb,$5,$6,$7)",
            message.command_id,
            message.destination,
            message.key,
            orjson.dumps(message.headers).decode(),
            message.body,
            message.created_at,
            claimed_until,
        )
