"""The inventory service: reserves and releases stock (a saga participant)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model import ReleaseStock, ReserveStock
from worklog import WorkLog

from streamlib import StreamApp
from streamlib.saga import Participant, SagaStore, StepFailed


class InventoryService:
    """``stock`` units of every SKU; a reservation of more than is left fails."""

    def __init__(
        self,
        config: Mapping[str, Any] | str | Path | None = None,
        *,
        store: SagaStore | None = None,
        destination: str = "inventory",
        stock: int = 100,
        work_log: Path | None = None,
    ) -> None:
        self.app = StreamApp("inventory", config=config)
        self.participant = Participant(self.app, destination, store=store)
        self.work = WorkLog(work_log)
        self.reserved: dict[str, tuple[str, int]] = {}
        left: dict[str, int] = {}

        @self.participant.handler(ReserveStock)
        async def reserve_stock(cmd: ReserveStock) -> None:
            available = left.setdefault(cmd.sku, stock)
            if cmd.quantity > available:
                raise StepFailed(f"only {available} of {cmd.sku} left")
            left[cmd.sku] = available - cmd.quantity
            self.reserved[cmd.order_id] = (cmd.sku, cmd.quantity)
            await self.work.record("reserve-stock", cmd.order_id)

        @self.participant.handler(ReleaseStock)
        async def release_stock(cmd: ReleaseStock) -> None:
            sku, quantity = self.reserved.pop(cmd.order_id, (cmd.sku, 0))
            left[sku] = left.get(sku, stock) + quantity
            await self.work.record("release-stock", cmd.order_id)


service = InventoryService()
app = service.app
