"""The CLI that reads a saga store, and definition checks (the stores themselves:
tests/integration/saga/test_saga_store_suite.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel

from streamlib.cli import main
from streamlib.saga import (
    HistoryEntry,
    Saga,
    SagaRecord,
    SagaState,
    SqliteSagaStore,
    Wait,
)

pytestmark = pytest.mark.anyio


async def fill(path: Path) -> None:
    store = SqliteSagaStore(path)
    done = SagaRecord(id="s-1", saga="create-order", state=SagaState.RUNNING, step=0, data={})
    await store.create(done, HistoryEntry("s-1", "started"))
    await store.update(
        done.evolve(state=SagaState.COMPLETED, step=2, data={"n": 1}),
        HistoryEntry("s-1", "completed"),
    )
    stuck = SagaRecord(
        id="s-2",
        saga="create-order",
        state=SagaState.NEEDS_ATTENTION,
        step=0,
        data={},
        wait=Wait.RUN,
        error="create_order: ledger is locked",
    )
    await store.create(stuck, HistoryEntry("s-2", "needs attention", "create_order", "5 times"))
    await store.aclose()


def test_cli_lists_and_shows_sagas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "saga.db"
    asyncio.run(fill(path))
    assert main(["saga", "list", "--store", str(path)]) == 0
    out = capsys.readouterr().out
    assert "s-1" in out and "completed" in out and "s-2" in out and "needs_attention" in out
    assert main(["saga", "list", "--store", str(path), "--state", "needs_attention"]) == 0
    out = capsys.readouterr().out
    assert "s-2" in out and "s-1" not in out
    assert main(["saga", "show", "s-2", "--store", str(path)]) == 0
    out = capsys.readouterr().out
    assert "needs_attention" in out and "ledger is locked" in out and "needs attention" in out


def test_cli_reads_the_store_path_from_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(fill(tmp_path / "orders.db"))
    config = tmp_path / "streamlib.yaml"
    config.write_text(f"saga:\n  store: {tmp_path / 'orders.db'}\n")
    assert main(["saga", "show", "s-1", "--config", str(config)]) == 0
    assert "completed" in capsys.readouterr().out
    config.write_text(f"saga:\n  store: {tmp_path / 'missing.db'}\n")
    assert main(["saga", "list", "--config", str(config)]) == 2
    assert main(["saga", "show", "nope", "--store", str(tmp_path / "orders.db")]) == 2


class Data(BaseModel):
    pass


def test_steps_after_a_retriable_step_must_be_retriable() -> None:
    saga = Saga("s", Data)

    @saga.local(retriable=True)
    async def pivot(data: Data) -> None:
        return None

    with pytest.raises(ValueError, match="must be retriable"):

        @saga.local()
        async def later(data: Data) -> None:
            return None

    with pytest.raises(ValueError, match="never compensated"):

        @pivot.compensate
        async def undo(data: Data) -> None:
            return None
