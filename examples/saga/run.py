"""The three services in one process on the in-memory binder: a happy path, then a saga that
fails at its third step and is compensated.

    python examples/saga/run.py

Set STREAMLIB_DEFAULT_BINDER (with binders configured, see README.md) to run on a broker.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from typing import Any

from inventory import InventoryService
from model import Order
from orders import OrdersService
from payments import PaymentsService

from streamlib.saga import MemorySagaStore, Orchestrator

MEMORY: dict[str, Any] = {"binders": {"memory": {"type": "memory"}}, "default-binder": "memory"}


async def show(orchestrator: Orchestrator, saga_id: str) -> None:
    record = await orchestrator.wait(saga_id)
    print(f"saga {saga_id}: {record.state.value}" + (f" ({record.error})" if record.error else ""))
    for entry in await orchestrator.store.history(saga_id):
        print(f"    {entry.event:<18} {entry.step or ''} {entry.detail or ''}".rstrip())
    print(f"    order: {orchestrator.data(record)}")


async def main() -> None:
    orders = OrdersService(MEMORY, store=MemorySagaStore())
    payments = PaymentsService(MEMORY, store=MemorySagaStore())
    inventory = InventoryService(MEMORY, store=MemorySagaStore(), stock=10)
    async with AsyncExitStack() as stack:
        for service_app in (payments.app, inventory.app, orders.app):
            await stack.enter_async_context(service_app.run())
        ok = Order(order_id="o-1", customer="alice", amount=120.0, sku="book", quantity=2)
        too_many = Order(order_id="o-2", customer="bob", amount=80.0, sku="book", quantity=50)
        for order in (ok, too_many):
            await orders.app.send("order-requests", order, key=order.order_id)
            await show(orders.orchestrator, order.order_id)
    print("payments did:", payments.work.entries)
    print("inventory did:", inventory.work.entries)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())
