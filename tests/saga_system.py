"""The example's three services wired for tests, on any binder, with unique destinations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inventory import InventoryService
from orders import OrdersService
from payments import PaymentsService

from streamlib import Message, StreamApp
from streamlib.saga import MemorySagaStore, SagaEvent, SagaStore


@dataclass
class SagaSystem:
    orders: OrdersService
    payments: PaymentsService
    inventory: InventoryService
    observer: StreamApp
    names: dict[str, str]
    events: list[SagaEvent] = field(default_factory=list)
    replies: list[Message[bytes]] = field(default_factory=list)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SagaSystem]:
        async with AsyncExitStack() as stack:
            for app in (self.observer, self.payments.app, self.inventory.app, self.orders.app):
                await stack.enter_async_context(app.run())
            yield self

    async def events_for(self, saga_id: str, count: int, timeout: float = 20.0) -> list[str]:
        """The types of the first ``count`` events of ``saga_id``, once they arrived."""
        async with asyncio.timeout(timeout):
            while True:
                types = [e.type.value for e in self.events if e.saga_id == saga_id]
                if len(types) >= count:
                    return types
                await asyncio.sleep(0.02)


def build_system(
    binder_config: Mapping[str, Any],
    unique: Callable[[str], str],
    *,
    orders_store: SagaStore | None = None,
    payments_store: SagaStore | None = None,
    inventory_store: SagaStore | None = None,
    stock: int = 10,
    work_dir: Path | None = None,
) -> SagaSystem:
    names = {k: unique(k) for k in ("payments", "inventory", "requests", "replies", "events")}
    orders_config = {**binder_config, "saga": {"events-destination": names["events"]}}
    orders = OrdersService(
        orders_config,
        store=orders_store or MemorySagaStore(),
        payments=names["payments"],
        inventory=names["inventory"],
        requests=names["requests"],
        reply_destination=names["replies"],
    )
    payments = PaymentsService(
        binder_config,
        store=payments_store or MemorySagaStore(),
        destination=names["payments"],
        work_log=work_dir / "payments.log" if work_dir else None,
    )
    inventory = InventoryService(
        binder_config,
        store=inventory_store or MemorySagaStore(),
        destination=names["inventory"],
        stock=stock,
        work_log=work_dir / "inventory.log" if work_dir else None,
    )
    observer = StreamApp("observer", config=binder_config)
    system = SagaSystem(orders, payments, inventory, observer, names)
    observer.binding_defaults(
        "saga_events-in-0", {"destination": names["events"], "group": "observer"}
    )
    observer.binding_defaults(
        "saga_replies-in-0", {"destination": names["replies"], "group": "observer"}
    )

    @observer.sink
    async def saga_events(event: SagaEvent) -> None:
        system.events.append(event)

    @observer.sink
    async def saga_replies(msg: Message[bytes]) -> None:
        system.replies.append(msg)

    return system
