"""One suite for every saga store: memory, SQLite and PostgreSQL pass the same tests.

Records and history, fencing (a stale owner's write is refused), claims and takeover, leases,
the participant transaction with its outbox, and pruning. The SQL statements of the participant
tests are written with ``?`` and turned into ``$n`` for PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from streamlib.saga import (
    DedupeRecord,
    HistoryEntry,
    MemorySagaStore,
    OutboxMessage,
    PostgresSagaStore,
    SagaRecord,
    SagaState,
    SagaStore,
    SqliteSagaStore,
    StaleSagaError,
    Wait,
)

pytestmark = pytest.mark.anyio

Factory = Callable[[], SagaStore]


async def _drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path, unique: Callable[[str], str]
) -> AsyncIterator[Factory]:
    """Opens stores on one database (two of them act as two processes)."""
    opened: list[SagaStore] = []
    memory = MemorySagaStore()
    schema = unique("saga").replace("-", "_")
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else ""

    def open_store() -> SagaStore:
        store: SagaStore
        if request.param == "memory":
            store = memory
        elif request.param == "sqlite":
            store = SqliteSagaStore(tmp_path / "saga.db")
        else:
            store = PostgresSagaStore(url, schema=schema)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        await store.aclose()
    if url:
        await _drop_schema(url, schema)


@pytest.fixture
def store(stores: Factory) -> SagaStore:
    return stores()


def sql(store: SagaStore, statement: str) -> str:
    """``?`` placeholders as the store's dialect wants them."""
    if isinstance(store, PostgresSagaStore):
        numbers = iter(range(1, 100))
        return re.sub(r"\?", lambda _: f"${next(numbers)}", statement)
    return statement


def saga(saga_id: str, **changes: object) -> SagaRecord:
    record = SagaRecord(id=saga_id, saga="create-order", state=SagaState.RUNNING, step=0, data={})
    return record.evolve(**changes) if changes else record


async def test_records_history_and_dedupe(store: SagaStore) -> None:
    first = saga("s-1", created_at=1.0)
    await store.create(first, HistoryEntry("s-1", "started"))
    await store.update(
        first.evolve(state=SagaState.COMPLETED, step=2, data={"n": 1, "nested": {"a": [1, 2]}}),
        HistoryEntry("s-1", "completed", "approve", "done"),
    )
    await store.create(saga("s-2", state=SagaState.NEEDS_ATTENTION, error="stuck", created_at=2.0))
    record = await store.get("s-1")
    assert record is not None
    assert (record.state, record.step) == (SagaState.COMPLETED, 2)
    assert record.data == {"n": 1, "nested": {"a": [1, 2]}}
    assert await store.get("nope") is None
    assert [r.id for r in await store.list()] == ["s-1", "s-2"]
    assert [r.id for r in await store.list(SagaState.NEEDS_ATTENTION)] == ["s-2"]
    assert [r.id for r in await store.list([SagaState.COMPLETED], saga="create-order")] == ["s-1"]
    assert await store.list(saga="other") == []
    await store.append_history(HistoryEntry("s-1", "note"))
    history = await store.history("s-1")
    assert [(e.event, e.step, e.detail) for e in history] == [
        ("started", None, None),
        ("completed", "approve", "done"),
        ("note", None, None),
    ]
    with pytest.raises(ValueError, match="s-1"):
        await store.create(first)
    with pytest.raises(KeyError):
        await store.update(saga("missing"))
    assert await store.put_dedupe(DedupeRecord("c-1", "success", b"{}"))
    assert not await store.put_dedupe(DedupeRecord("c-1", "failure", b"{}"))
    answer = await store.get_dedupe("c-1")
    assert answer is not None and (answer.outcome, answer.body) == ("success", b"{}")
    assert await store.get_dedupe("c-2") is None


async def test_a_stale_owner_cannot_write_over_the_instance_that_took_over(
    stores: Factory,
) -> None:
    a, b = stores(), stores()
    await a.create(saga("s-1", owner="a", lease_until=100.0, fence=1))
    held = await a.claim("s-1", "a", until=100.0, now=50.0)
    assert held is not None and (held.owner, held.fence) == ("a", 2)
    # b cannot take a live lease ...
    refused = await b.claim("s-1", "b", until=200.0, now=99.0)
    assert refused is not None and (refused.owner, refused.fence) == ("a", 2)
    # ... but takes it over once it expired.
    taken = await b.claim("s-1", "b", until=300.0, now=101.0)
    assert taken is not None and (taken.owner, taken.fence) == ("b", 3)
    with pytest.raises(StaleSagaError):
        await a.update(held.evolve(step=5), HistoryEntry("s-1", "stale write"))
    await b.update(taken.evolve(step=1), HistoryEntry("s-1", "step done"))
    stored = await a.get("s-1")
    assert stored is not None and (stored.step, stored.owner, stored.fence) == (1, "b", 3)
    assert [e.event for e in await a.history("s-1")] == ["step done"]
    # Releasing keeps the fence; the next claim increments it, and the releaser is stale again.
    await b.update(stored.evolve(owner=None, wait=Wait.REPLY, deadline=400.0))
    released = await a.get("s-1")
    assert released is not None and (released.owner, released.lease_until) == (None, None)
    again = await a.claim("s-1", "a", until=500.0, now=302.0)
    assert again is not None and (again.owner, again.fence) == ("a", 4)
    with pytest.raises(StaleSagaError):
        await b.update(stored.evolve(step=9))


async def test_an_update_keeps_the_stored_lease_and_renew_extends_only_own_leases(
    store: SagaStore,
) -> None:
    await store.create(saga("s-1"))
    await store.create(saga("s-2"))
    one = await store.claim("s-1", "a", until=10.0, now=0.0)
    two = await store.claim("s-2", "b", until=10.0, now=0.0)
    assert one is not None and two is not None
    assert await store.renew("a", ["s-1", "s-2", "s-3"], until=20.0) == {"s-1"}
    # The record in hand still says lease_until=10: an update does not shorten the lease.
    await store.update(one.evolve(step=1))
    stored = await store.get("s-1")
    assert stored is not None and (stored.lease_until, stored.owner, stored.step) == (20.0, "a", 1)
    other = await store.get("s-2")
    assert other is not None and other.lease_until == 10.0
    assert await store.expire_leases("a") == 1
    expired = await store.get("s-1")
    assert expired is not None and expired.owner == "a" and (expired.lease_until or 0) < 1


async def test_claim_due_finds_deadlines_sagas_to_run_and_dead_owners_leases(
    store: SagaStore,
) -> None:
    await store.create(saga("waits", wait=Wait.REPLY, deadline=200.0, created_at=1.0))
    await store.create(saga("timed-out", wait=Wait.REPLY, deadline=50.0, created_at=2.0))
    await store.create(saga("to-run", wait=Wait.RUN, created_at=3.0))
    await store.create(saga("no-deadline", wait=Wait.REPLY, created_at=4.0))
    await store.create(saga("owner-died", owner="x", lease_until=90.0, fence=1, created_at=5.0))
    await store.create(saga("owner-alive", owner="y", lease_until=150.0, fence=1, created_at=6.0))
    await store.create(saga("done", state=SagaState.COMPLETED, deadline=1.0, created_at=7.0))
    claimed = await store.claim_due("me", until=300.0, now=100.0)
    assert [r.id for r in claimed] == ["timed-out", "to-run", "owner-died"]
    assert all(r.owner == "me" and r.lease_until == 300.0 for r in claimed)
    assert [r.fence for r in claimed] == [1, 1, 2]
    # Claimed sagas are held now: nobody else gets them.
    assert await store.claim_due("other", until=300.0, now=100.0) == []
    assert [r.id for r in await store.claim_due("me", until=300.0, now=100.0, limit=1)] == []
    final = await store.claim("done", "me", until=300.0, now=100.0)
    assert final is not None and final.owner is None


async def test_concurrent_claimers_never_get_the_same_saga(stores: Factory) -> None:
    first = stores()
    for n in range(60):
        await first.create(saga(f"s-{n:02}", wait=Wait.RETRY, deadline=1.0, created_at=float(n)))
    claimers = [first, stores(), stores()]

    async def claim_all(store: SagaStore, owner: str) -> list[str]:
        got: list[str] = []
        while batch := await store.claim_due(owner, until=1e12, now=10.0, limit=7):
            got.extend(r.id for r in batch)
            await asyncio.sleep(0)
        return got

    results = await asyncio.gather(*(claim_all(s, f"o{i}") for i, s in enumerate(claimers)))
    every = [saga_id for got in results for saga_id in got]
    assert sorted(every) == [f"s-{n:02}" for n in range(60)]
    owners = {r.id: r.owner for r in await first.list()}
    for i, got in enumerate(results):
        assert all(owners[saga_id] == f"o{i}" for saga_id in got)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def sql_store(
    request: pytest.FixtureRequest, tmp_path: Path, unique: Callable[[str], str]
) -> AsyncIterator[SagaStore]:
    """A store that runs a participant's SQL."""
    store: SagaStore
    schema = unique("saga").replace("-", "_")
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else ""
    store = PostgresSagaStore(url, schema=schema) if url else SqliteSagaStore(tmp_path / "p.db")
    # The store creates its tables on first use; the participant's table comes after.
    await store.get("warm-up")
    async with store.transaction() as tx:
        await tx.execute("CREATE TABLE credit (order_id TEXT PRIMARY KEY, amount INTEGER)")
    yield store
    await store.aclose()
    if url:
        await _drop_schema(url, schema)


def reply(command_id: str) -> OutboxMessage:
    return OutboxMessage(command_id, "orders.replies", "o-1", {"saga-outcome": "success"}, b"{}")


async def test_participant_work_dedupe_and_reply_commit_together(sql_store: SagaStore) -> None:
    store = sql_store
    insert = sql(store, "INSERT INTO credit (order_id, amount) VALUES (?, ?)")
    async with store.transaction() as tx:
        await tx.execute(insert, "o-1", 10)
        assert await tx.put_dedupe(DedupeRecord("c-1", "success", b"{}"))
        await tx.put_outbox(reply("c-1"))
        assert await tx.fetch("SELECT order_id, amount FROM credit") == [("o-1", 10)]
    with pytest.raises(RuntimeError, match="crash"):
        async with store.transaction() as tx:
            await tx.execute(insert, "o-2", 20)
            await tx.put_dedupe(DedupeRecord("c-2", "success", b"{}"))
            await tx.put_outbox(reply("c-2"))
            raise RuntimeError("crash before commit")
    async with store.transaction() as tx:
        assert await tx.fetch("SELECT order_id, amount FROM credit") == [("o-1", 10)]
        # A second delivery of c-1 finds its answer: the caller rolls back its work.
        assert not await tx.put_dedupe(DedupeRecord("c-1", "success", b"{}"))
    assert await store.get_dedupe("c-2") is None
    assert await store.get_dedupe("c-1") is not None
    due = await store.claim_outbox(now=1e12, until=2e12)
    assert [(m.command_id, m.headers, m.body) for m in due] == [
        ("c-1", {"saga-outcome": "success"}, b"{}")
    ]
    # Claimed by one relay: another relay does not get it until the claim expires.
    assert await store.claim_outbox(now=1e12, until=2e12) == []
    assert [m.command_id for m in await store.claim_outbox(now=3e12, until=4e12)] == ["c-1"]
    await store.mark_sent(["c-1"], at=5.0)
    assert await store.claim_outbox(now=9e12, until=9e12) == []


async def test_prune_removes_finished_sagas_and_old_answers_only(store: SagaStore) -> None:
    await store.create(saga("old-done", state=SagaState.COMPLETED, updated_at=10.0))
    await store.append_history(HistoryEntry("old-done", "completed"))
    await store.create(saga("old-running", updated_at=10.0))
    await store.create(saga("new-done", state=SagaState.COMPENSATED, updated_at=1000.0))
    await store.put_dedupe(DedupeRecord("c-old", "success", b"{}", at=10.0))
    await store.put_dedupe(DedupeRecord("c-new", "success", b"{}", at=1000.0))
    assert await store.prune(before=100.0) == 3
    assert [r.id for r in await store.list()] == ["old-running", "new-done"]
    assert await store.history("old-done") == []
    assert await store.get_dedupe("c-old") is None and await store.get_dedupe("c-new") is not None
