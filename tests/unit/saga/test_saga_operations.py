"""Operator commands (retry, compensate, skip), retention and the Mermaid diagram."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from streamlib import StreamApp
from streamlib.cli import main
from streamlib.saga import (
    Backoff,
    HistoryEntry,
    MemorySagaStore,
    Orchestrator,
    Saga,
    SagaRecord,
    SagaState,
    SqliteSagaStore,
    Wait,
)
from streamlib.saga.operations import resolve

pytestmark = pytest.mark.anyio


class Data(BaseModel):
    value: int = 0


def stubborn_saga(fails: list[str]) -> Saga[Data]:
    """``first`` has a compensation that fails while ``fails`` says so; ``second`` fails."""
    saga = Saga("stubborn", Data, compensation_backoff=Backoff(attempts=2, initial=0.01))

    @saga.local()
    async def first(data: Data) -> Data:
        return data

    @first.compensate
    async def undo_first(data: Data) -> Data:
        if fails:
            raise RuntimeError(fails[0])
        return data

    @saga.local()
    async def second(data: Data) -> Data:
        raise ValueError("no")

    return saga


@pytest.mark.parametrize("action", ["retry", "skip"])
async def test_a_saga_needing_attention_goes_on_after_retry_or_skip(
    memory_config: dict[str, Any], action: str
) -> None:
    fails = ["ledger is locked"]
    saga = stubborn_saga(fails)
    app = StreamApp("solo", config=memory_config)
    store = MemorySagaStore()
    orchestrator = Orchestrator(app, [saga], store=store, tick=0.02)
    async with app.run():
        saga_id = await orchestrator.start(saga, Data())
        stuck = await orchestrator.wait(saga_id)
        assert stuck.state is SagaState.NEEDS_ATTENTION
        fails.clear()  # the operator fixed the ledger
        resumed = await resolve(store, saga_id, action)  # type: ignore[arg-type]
        step = 0 if action == "retry" else -1  # a skip moves on to the compensation before
        assert (resumed.state, resumed.step, resumed.owner) == (SagaState.COMPENSATING, step, None)
        record = await orchestrator.wait(saga_id)
        history = [e.event for e in await store.history(saga_id)]
    assert record.state is SagaState.COMPENSATED
    assert f"operator {action}" in history
    # A retry runs the compensation again; a skip treats it as done.
    assert history.count("step compensated") == (1 if action == "retry" else 0)


def needing_attention(saga_id: str, step: int, detail: str) -> tuple[SagaRecord, HistoryEntry]:
    record = SagaRecord(
        id=saga_id,
        saga="create-order",
        state=SagaState.NEEDS_ATTENTION,
        step=step,
        data={},
        error="approve_order: down",
        fence=4,
    )
    return record, HistoryEntry(saga_id, "needs attention", "approve_order", detail)


def test_cli_retry_compensate_and_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "saga.db"

    async def fill() -> None:
        store = SqliteSagaStore(path)
        for saga_id in ("r", "c", "s"):
            await store.create(*needing_attention(saga_id, 3, "step failed 5 times: down"))
        await store.create(
            SagaRecord(id="ok", saga="x", state=SagaState.COMPLETED, step=2, data={})
        )
        await store.aclose()

    asyncio.run(fill())
    for saga_id, action in (("r", "retry"), ("c", "compensate"), ("s", "skip")):
        assert main(["saga", action, saga_id, "--store", str(path)]) == 0
    out = capsys.readouterr().out
    assert "saga r: retry; now running at step 3" in out
    assert "saga c: compensate; now compensating at step 2" in out
    assert "saga s: skip; now running at step 4" in out
    assert main(["saga", "retry", "ok", "--store", str(path)]) == 2
    assert main(["saga", "retry", "nope", "--store", str(path)]) == 2

    async def read() -> list[SagaRecord]:
        store = SqliteSagaStore(path)
        records = [r for r in await store.list() if r.id != "ok"]
        await store.aclose()
        return records

    records = asyncio.run(read())
    assert all(r.wait is Wait.RUN and r.owner is None and r.attempt == 0 for r in records)
    assert main(["saga", "show", "c", "--store", str(path)]) == 0
    assert "operator compensate" in capsys.readouterr().out


def test_cli_prunes_by_age(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "saga.db"
    old = time.time() - 10 * 86400

    async def fill() -> None:
        store = SqliteSagaStore(path)
        done = SagaRecord(id="old", saga="x", state=SagaState.COMPLETED, step=1, data={})
        await store.create(done.evolve(updated_at=old), HistoryEntry("old", "completed"))
        await store.create(
            SagaRecord(id="new", saga="x", state=SagaState.COMPLETED, step=1, data={})
        )
        await store.aclose()

    asyncio.run(fill())
    assert main(["saga", "prune", "--older-than", "7", "--store", str(path)]) == 0
    assert "pruned 2 row(s)" in capsys.readouterr().out
    assert main(["saga", "list", "--store", str(path)]) == 0
    out = capsys.readouterr().out
    assert "new" in out and "old" not in out


async def test_orchestrator_prunes_finished_sagas_after_the_retention(
    memory_config: dict[str, Any],
) -> None:
    store = MemorySagaStore()
    old = SagaRecord(id="old", saga="stubborn", state=SagaState.COMPENSATED, step=-1, data={})
    await store.create(old.evolve(updated_at=time.time() - 120))
    saga = stubborn_saga([])
    app = StreamApp("solo", config=memory_config)
    orchestrator = Orchestrator(app, [saga], store=store, tick=0.02, retention=60)
    async with app.run():
        fresh = await orchestrator.wait(await orchestrator.start(saga, Data()))
        async with asyncio.timeout(10):
            while await store.get("old") is not None:
                await asyncio.sleep(0.02)
    assert fresh.state is SagaState.COMPENSATED
    assert [r.id for r in await store.list()] == [fresh.id]


def test_cli_prints_a_mermaid_diagram(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["saga", "diagram", "model:order_saga"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("flowchart TD")
    for line in (
        's0["create_order<br/><small>local</small>"]',
        's1["reserve_credit<br/><small>command to payments</small>"]',
        "s0 --> s1",
        "s1 -. fails .-> c0",
        'c1["undo reserve_credit<br/><small>command to payments</small>"]',
        "c1 --> c0",
        "c0 --> compensated",
    ):
        assert line in out, line
    assert main(["saga", "diagram", "model:Order"]) == 2
    assert main(["saga", "diagram", "model"]) == 2
