"""The example's saga on real brokers: happy path, and a failure at the third step."""

from __future__ import annotations

from pathlib import Path

import pytest
from model import Order
from saga_system import build_system

from streamlib.saga import SagaState, SqliteSagaStore
from streamlib.testing import BinderHarness

pytestmark = pytest.mark.anyio


async def test_happy_path_and_compensation_at_the_third_step(
    broker_harness: BinderHarness, tmp_path: Path
) -> None:
    system = build_system(
        broker_harness.binder_config(),
        broker_harness.unique,
        orders_store=SqliteSagaStore(tmp_path / "orders.db"),
        payments_store=SqliteSagaStore(tmp_path / "payments.db"),
        inventory_store=SqliteSagaStore(tmp_path / "inventory.db"),
        stock=5,
    )
    ok = Order(order_id="ok", customer="c-1", amount=10.0, sku="book", quantity=2)
    too_many = Order(order_id="too-many", customer="c-1", amount=10.0, sku="book", quantity=9)
    orchestrator = system.orders.orchestrator
    async with system.running():
        for order in (ok, too_many):
            await system.orders.app.send(system.names["requests"], order, key=order.order_id)
        done = await orchestrator.wait("ok", timeout=60)
        failed = await orchestrator.wait("too-many", timeout=60)
        history = await orchestrator.store.history("too-many")
        kinds = await system.events_for("too-many", 5, timeout=60)
    assert done.state is SagaState.COMPLETED
    assert failed.state is SagaState.COMPENSATED
    assert failed.error == "reserve_stock: only 3 of book left"
    compensated = [e.step for e in history if e.event == "step compensated"]
    assert compensated == ["reserve_credit", "create_order"]
    assert system.payments.work.counts() == {
        ("reserve-credit", "ok"): 1,
        ("reserve-credit", "too-many"): 1,
        ("release-credit", "too-many"): 1,
    }
    assert system.inventory.work.counts() == {("reserve-stock", "ok"): 1}
    assert kinds == ["started", "step_done", "step_done", "compensating", "compensated"]
