"""Saga behaviour on the in-memory binder: the example's services, end to end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from model import Order
from pydantic import BaseModel
from saga_system import build_system

from streamlib import StreamApp
from streamlib.saga import (
    Backoff,
    HistoryEntry,
    MemorySagaStore,
    Orchestrator,
    Participant,
    Saga,
    SagaRecord,
    SagaState,
    StepFailed,
    Wait,
)
from streamlib.saga import headers as h

pytestmark = pytest.mark.anyio


def order(order_id: str, quantity: int = 1, amount: float = 10.0) -> Order:
    return Order(order_id=order_id, customer="c-1", amount=amount, sku="book", quantity=quantity)


def events(history: list[HistoryEntry]) -> list[tuple[str, str | None]]:
    return [(e.event, e.step) for e in history]


async def test_happy_path_completes_every_step_once(
    memory_config: dict[str, Any], names: Callable[[str], str]
) -> None:
    system = build_system(memory_config, names)
    async with system.running():
        await system.orders.app.send(system.names["requests"], order("o-1"), key="o-1")
        record = await system.orders.orchestrator.wait("o-1")
        kinds = await system.events_for("o-1", 6)
    assert record.state is SagaState.COMPLETED
    data = system.orders.orchestrator.data(record)
    assert isinstance(data, Order)
    assert data.status == "approved"
    assert data.credit_reservation
    assert system.payments.work.entries == [("reserve-credit", "o-1")]
    assert system.inventory.work.entries == [("reserve-stock", "o-1")]
    assert kinds == ["started", "step_done", "step_done", "step_done", "step_done", "completed"]


async def test_failure_at_third_step_compensates_steps_two_then_one(
    memory_config: dict[str, Any], names: Callable[[str], str]
) -> None:
    system = build_system(memory_config, names, stock=5)
    async with system.running():
        await system.orders.app.send(system.names["requests"], order("o-2", quantity=50))
        record = await system.orders.orchestrator.wait("o-2")
        history = await system.orders.orchestrator.store.history("o-2")
        kinds = await system.events_for("o-2", 5)
    assert record.state is SagaState.COMPENSATED
    assert record.error == "reserve_stock: only 5 of book left"
    compensated = [e.step for e in history if e.event == "step compensated"]
    assert compensated == ["reserve_credit", "create_order"]
    data = system.orders.orchestrator.data(record)
    assert isinstance(data, Order) and data.status == "rejected"
    assert system.payments.work.entries == [("reserve-credit", "o-2"), ("release-credit", "o-2")]
    assert system.inventory.work.entries == []
    assert kinds == ["started", "step_done", "step_done", "compensating", "compensated"]


class Data(BaseModel):
    value: int = 0
    undone: list[str] = []


class Noop(BaseModel):
    pass


def memory_app(config: dict[str, Any], name: str = "solo") -> StreamApp:
    return StreamApp(name, config=config)


async def test_reply_that_never_comes_times_out_and_compensates(
    memory_config: dict[str, Any],
) -> None:
    saga = Saga("silent", Data)

    @saga.local()
    async def first(data: Data) -> Data:
        return data.model_copy(update={"value": 1})

    @first.compensate
    async def undo_first(data: Data) -> Data:
        return data.model_copy(update={"undone": [*data.undone, "first"]})

    @saga.remote(destination="nobody-listens", timeout=0.3)
    def second(data: Data) -> Noop:
        return Noop()

    app = memory_app(memory_config)
    orchestrator = Orchestrator(app, [saga], store=MemorySagaStore())
    async with app.run():
        saga_id = await orchestrator.start(saga, Data())
        record = await orchestrator.wait(saga_id)
    assert record.state is SagaState.COMPENSATED
    assert record.error == "second: timed out"
    assert Data.model_validate(record.data).undone == ["first"]


async def test_duplicated_command_is_answered_without_doing_the_work_twice(
    memory_config: dict[str, Any], names: Callable[[str], str]
) -> None:
    system = build_system(memory_config, names)
    async with system.running():
        headers = {
            h.SAGA_ID: "s-1",
            h.SAGA_STEP: "reserve_credit",
            h.COMMAND: "ReserveCredit",
            h.COMMAND_ID: "cmd-1",
            h.REPLY_TO: system.names["replies"],
        }
        command = {"order_id": "o-9", "customer": "c-9", "amount": 5.0}
        for _ in range(2):
            await system.observer.send(system.names["payments"], command, headers=headers)
        async with asyncio.timeout(10):
            while len(system.replies) < 2:
                await asyncio.sleep(0.02)
    assert system.payments.work.entries == [("reserve-credit", "o-9")]
    assert system.payments.participant.duplicates == 1
    first, second = system.replies
    assert first.payload == second.payload
    assert first.headers[h.OUTCOME] == second.headers[h.OUTCOME] == h.SUCCESS
    assert first.headers[h.COMMAND_ID] == second.headers[h.COMMAND_ID] == "cmd-1"


async def test_duplicated_reply_changes_nothing(
    memory_config: dict[str, Any], names: Callable[[str], str]
) -> None:
    system = build_system(memory_config, names)
    orchestrator = system.orders.orchestrator
    async with system.running():
        await system.orders.app.send(system.names["requests"], order("o-3"))
        before = await orchestrator.wait("o-3")
        history_before = await orchestrator.store.history("o-3")
        async with asyncio.timeout(10):
            while len(system.replies) < 2:
                await asyncio.sleep(0.02)
        reply = system.replies[0]
        await system.observer.send(
            system.names["replies"], reply.payload, headers=dict(reply.headers)
        )
        async with asyncio.timeout(10):
            while orchestrator.ignored_replies < 1:
                await asyncio.sleep(0.02)
        after = await orchestrator.store.get("o-3")
        history_after = await orchestrator.store.history("o-3")
    assert after == before
    assert history_after == history_before
    assert system.payments.work.entries == [("reserve-credit", "o-3")]


async def test_compensation_that_keeps_failing_leaves_the_saga_needing_attention(
    memory_config: dict[str, Any],
) -> None:
    saga = Saga("stubborn", Data, compensation_backoff=Backoff(attempts=3, initial=0.01))
    tries: list[int] = []

    @saga.local()
    async def first(data: Data) -> Data:
        return data

    @first.compensate
    async def undo_first(data: Data) -> Data:
        tries.append(1)
        raise RuntimeError("ledger is locked")

    @saga.local()
    async def second(data: Data) -> Data:
        raise ValueError("no")

    app = memory_app(memory_config)
    orchestrator = Orchestrator(app, [saga], store=MemorySagaStore())
    async with app.run():
        saga_id = await orchestrator.start(saga, Data())
        record = await orchestrator.wait(saga_id)
        history = await orchestrator.store.history(saga_id)
    assert record.state is SagaState.NEEDS_ATTENTION
    assert record.error == "first: RuntimeError: ledger is locked"
    assert len(tries) == 3
    assert history[-1].event == "needs attention"


async def test_retriable_step_is_retried_until_it_succeeds(memory_config: dict[str, Any]) -> None:
    saga = Saga("persistent", Data, retry_backoff=Backoff(attempts=5, initial=0.01))
    tries: list[int] = []

    @saga.local()
    async def pivot(data: Data) -> Data:
        return data

    @saga.local(retriable=True)
    async def notify(data: Data) -> Data:
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionError("mail server down")
        return data.model_copy(update={"value": len(tries)})

    app = memory_app(memory_config)
    orchestrator = Orchestrator(app, [saga], store=MemorySagaStore())
    async with app.run():
        record = await orchestrator.wait(await orchestrator.start(saga, Data()))
    assert record.state is SagaState.COMPLETED
    assert Data.model_validate(record.data).value == 3


async def test_restarted_orchestrator_resends_the_pending_command(
    memory_config: dict[str, Any], names: Callable[[str], str]
) -> None:
    store = MemorySagaStore()
    system = build_system(memory_config, names, orders_store=store)
    pending = SagaRecord(
        id="o-4",
        saga="create-order",
        state=SagaState.RUNNING,
        step=1,
        data={**order("o-4").model_dump(), "status": "pending"},
        wait=Wait.REPLY,
        command_id="cmd-before-crash",
        deadline=time.time() + 60,
        # Its owner died before the command went out: its lease expired.
        owner="orders-dead",
        lease_until=time.time() - 1,
        fence=3,
    )
    await store.create(pending)
    async with system.running():
        record = await system.orders.orchestrator.wait("o-4")
        history = await store.history("o-4")
    assert record.state is SagaState.COMPLETED
    assert history[0].event == "resumed"
    assert history[1].detail is not None and "cmd-before-crash" in history[1].detail
    assert system.payments.work.entries == [("reserve-credit", "o-4")]


async def test_restarted_orchestrator_compensates_a_step_whose_deadline_passed(
    memory_config: dict[str, Any], names: Callable[[str], str]
) -> None:
    store = MemorySagaStore()
    system = build_system(memory_config, names, orders_store=store)
    await store.create(
        SagaRecord(
            id="o-5",
            saga="create-order",
            state=SagaState.RUNNING,
            step=1,
            data={**order("o-5").model_dump(), "status": "pending"},
            wait=Wait.REPLY,
            command_id="cmd-lost",
            deadline=time.time() - 1,
        )
    )
    async with system.running():
        record = await system.orders.orchestrator.wait("o-5")
        history = await store.history("o-5")
    assert record.state is SagaState.COMPENSATED
    assert record.error == "reserve_credit: timed out"
    # The timed-out step may have happened: it is compensated, then the step before it.
    assert [e.step for e in history if e.event == "step compensated"] == [
        "reserve_credit",
        "create_order",
    ]


async def test_starting_a_saga_twice_with_one_id_runs_it_once(
    memory_config: dict[str, Any], names: Callable[[str], str]
) -> None:
    system = build_system(memory_config, names)
    async with system.running():
        for _ in range(2):
            await system.orders.app.send(system.names["requests"], order("o-6"))
        record = await system.orders.orchestrator.wait("o-6")
        await system.events_for("o-6", 6)
    assert record.state is SagaState.COMPLETED
    assert system.payments.work.entries == [("reserve-credit", "o-6")]


async def test_many_sagas_with_concurrent_reply_handling(
    memory_config: dict[str, Any], names: Callable[[str], str]
) -> None:
    config = {
        **memory_config,
        "bindings": {"orders_saga_replies-in-0": {"consumer": {"concurrency": 4}}},
    }
    system = build_system(config, names, stock=1_000)
    ids = [f"c-{n}" for n in range(40)]
    async with system.running():
        for n, saga_id in enumerate(ids):
            quantity = 2_000 if n % 4 == 0 else 1
            await system.orders.app.send(system.names["requests"], order(saga_id, quantity))
        records = [await system.orders.orchestrator.wait(i) for i in ids]
    states = [r.state for r in records]
    assert states.count(SagaState.COMPENSATED) == 10
    assert states.count(SagaState.COMPLETED) == 30
    assert max(system.payments.work.counts().values()) == 1
    assert len(system.payments.work.entries) == 50  # 40 reservations, 10 releases


class Ping(BaseModel):
    n: int


async def test_remote_retriable_step_sends_a_new_command_after_a_failure_reply(
    memory_config: dict[str, Any],
) -> None:
    saga = Saga("flaky", Data, retry_backoff=Backoff(attempts=5, initial=0.01))

    @saga.local()
    async def pivot(data: Data) -> Data:
        return data

    @saga.remote(destination="flaky-service", retriable=True, timeout=5)
    def ping(data: Data) -> Ping:
        return Ping(n=data.value)

    @ping.on_reply
    def pong(data: Data, reply: Any) -> Data:
        return data.model_copy(update={"value": reply["n"]})

    app = memory_app(memory_config)
    service = memory_app(memory_config, "flaky")
    participant = Participant(service, "flaky-service", store=MemorySagaStore())
    calls: list[int] = []

    @participant.handler(Ping)
    async def answer(cmd: Ping) -> dict[str, int]:
        calls.append(cmd.n)
        if len(calls) < 3:
            raise StepFailed("busy")
        return {"n": 42}

    orchestrator = Orchestrator(app, [saga], store=MemorySagaStore())
    async with service.run(), app.run():
        record = await orchestrator.wait(await orchestrator.start(saga, Data()))
        history = await orchestrator.store.history(record.id)
    assert record.state is SagaState.COMPLETED
    assert Data.model_validate(record.data).value == 42
    assert len(calls) == 3
    commands = {e.detail.split()[1] for e in history if e.event == "command sent" and e.detail}
    assert len(commands) == 3


async def test_participant_error_is_no_answer_and_the_step_times_out(
    memory_config: dict[str, Any],
) -> None:
    saga = Saga("broken", Data)

    @saga.local()
    async def first(data: Data) -> Data:
        return data

    @first.compensate
    async def undo_first(data: Data) -> Data:
        return data.model_copy(update={"undone": ["first"]})

    @saga.remote(destination="broken-service", timeout=0.5)
    def ping(data: Data) -> Ping:
        return Ping(n=1)

    config = {
        **memory_config,
        "bindings": {
            "broken_service_saga_commands-in-0": {
                "consumer": {"max-attempts": 2, "back-off-initial-interval": 0.01}
            }
        },
    }
    app = memory_app(config)
    service = memory_app(config, "broken")
    participant = Participant(service, "broken-service", store=MemorySagaStore())

    @participant.handler(Ping)
    async def answer(cmd: Ping) -> None:
        raise RuntimeError("database is down")

    orchestrator = Orchestrator(app, [saga], store=MemorySagaStore())
    async with service.run(), app.run():
        record = await orchestrator.wait(await orchestrator.start(saga, Data()))
    assert record.state is SagaState.COMPENSATED
    assert record.error == "ping: timed out"
    assert Data.model_validate(record.data).undone == ["first"]
