"""A remote step whose reply never comes: its probe decides whether it took effect."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from streamlib import StreamApp
from streamlib.saga import (
    Backoff,
    MemorySagaStore,
    Orchestrator,
    Participant,
    Saga,
    SagaState,
    Wait,
)

pytestmark = pytest.mark.anyio


class Data(BaseModel):
    undone: list[str] = []


class Pay(BaseModel):
    pass


def build(config: dict[str, Any], answers: list[bool | None]) -> Any:
    saga = Saga("probed", Data, retry_backoff=Backoff(attempts=3, initial=0.05))
    asked: list[bool | None] = []

    @saga.local()
    async def first(data: Data) -> None:
        return None

    @first.compensate
    async def undo_first(data: Data) -> Data:
        return data.model_copy(update={"undone": [*data.undone, "first"]})

    @saga.remote(destination="payer", timeout=0.2)
    def pay(data: Data) -> Pay:
        return Pay()

    @pay.compensate
    async def refund(data: Data) -> Data:
        return data.model_copy(update={"undone": [*data.undone, "pay"]})

    @pay.probe
    async def paid(data: Data) -> bool | None:
        answer = answers.pop(0)
        asked.append(answer)
        return answer

    app = StreamApp("orders", config=config)
    orchestrator = Orchestrator(app, [saga], store=MemorySagaStore(), tick=0.02)
    no_retries = {"bindings": {"payer_saga_commands-in-0": {"consumer": {"max-attempts": 1}}}}
    payer = StreamApp("payer", config={**config, **no_retries})
    participant = Participant(payer, "payer", store=MemorySagaStore())

    @participant.handler(Pay)
    async def never_answers(cmd: Pay) -> None:
        raise RuntimeError("the payment service hangs")  # no answer: the step times out

    return saga, app, payer, orchestrator, asked


async def test_a_probe_that_finds_the_step_done_lets_the_saga_complete(
    memory_config: dict[str, Any],
) -> None:
    saga, app, payer, orchestrator, asked = build(memory_config, [True])
    async with payer.run(), app.run():
        record = await orchestrator.wait(await orchestrator.start(saga, Data()), timeout=10)
        history = await orchestrator.store.history(record.id)
    assert record.state is SagaState.COMPLETED and record.data["undone"] == []
    assert asked == [True]
    assert ("probed", "pay", "done") in [(e.event, e.step, e.detail) for e in history]


async def test_an_unknown_outcome_is_visible_and_asked_again_until_known(
    memory_config: dict[str, Any],
) -> None:
    saga, app, payer, orchestrator, asked = build(memory_config, [None, None, False])
    seen_waits: set[Wait] = set()
    async with payer.run(), app.run():
        saga_id = await orchestrator.start(saga, Data())
        while (record := await orchestrator.store.get(saga_id)) and not record.state.is_final:
            seen_waits.add(record.wait)
            await asyncio.sleep(0.005)
        history = await orchestrator.store.history(saga_id)
    assert Wait.PROBE in seen_waits
    assert [e.event for e in history].count("outcome unknown") == 2
    assert asked == [None, None, False]
    # Not done: only the step before it is compensated.
    assert record is not None and record.state is SagaState.COMPENSATED
    assert record.data["undone"] == ["first"]
    assert record.error == "pay: timed out; the probe found it not done"


async def test_an_outcome_that_stays_unknown_is_compensated_as_without_a_probe(
    memory_config: dict[str, Any],
) -> None:
    saga, app, payer, orchestrator, asked = build(memory_config, [None, None, None])
    async with payer.run(), app.run():
        record = await orchestrator.wait(await orchestrator.start(saga, Data()), timeout=10)
    assert asked == [None, None, None]
    assert record.state is SagaState.COMPENSATED
    assert record.data["undone"] == ["pay", "first"]  # it may have happened: undone too


def test_a_local_step_has_no_probe() -> None:
    saga = Saga("s", Data)

    @saga.local()
    async def local(data: Data) -> None:
        return None

    with pytest.raises(TypeError, match="local"):
        local.probe(lambda data: None)  # type: ignore[arg-type,return-value]
