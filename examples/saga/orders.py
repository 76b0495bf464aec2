"""The orders service: orchestrates the create-order saga; an order request starts one.

streamlib run orders:app          (from examples/saga, with STREAMLIB_CONFIG=orders.yaml)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model import Order, order_saga

from streamlib import StreamApp
from streamlib.saga import Orchestrator, Saga, SagaStore


class OrdersService:
    """The app, its orchestrator and the saga; ``place_order`` is bound to ``order-requests``."""

    def __init__(
        self,
        config: Mapping[str, Any] | str | Path | None = None,
        *,
        store: SagaStore | None = None,
        payments: str = "payments",
        inventory: str = "inventory",
        requests: str = "order-requests",
        reply_destination: str | None = None,
    ) -> None:
        self.app = StreamApp("orders", config=config)
        self.saga: Saga[Order] = order_saga(payments, inventory)
        self.orchestrator = Orchestrator(
            self.app, [self.saga], store=store, reply_destination=reply_destination
        )
        self.app.binding_defaults("place_order-in-0", {"destination": requests, "group": "orders"})

        @self.app.sink
        async def place_order(order: Order) -> None:
            # The order id is the saga id: a redelivered request does not start a second saga.
            await self.orchestrator.start(self.saga, order, saga_id=order.order_id)


service = OrdersService()
app = service.app
