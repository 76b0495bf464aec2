"""billing: turns orders into invoices with a tax rate that a bus refresh changes live."""

from __future__ import annotations

import logging

from pydantic import BaseModel

from streamlib import StreamApp
from streamlib.bus import Bus

log = logging.getLogger("billing")


class Order(BaseModel):
    id: int
    amount: float


class Invoice(BaseModel):
    order_id: int
    total: float
    tax_rate: float


class Pricing(BaseModel):
    tax_rate: float = 0.2


app = StreamApp("billing")
pricing = app.settings("pricing", Pricing)
bus = Bus(app)


@app.processor
async def bill(order: Order) -> Invoice:
    rate = pricing.value.tax_rate
    return Invoice(order_id=order.id, total=round(order.amount * (1 + rate), 2), tax_rate=rate)


@bus.on_refresh
def changed(keys: frozenset[str]) -> None:
    rate = pricing.value.tax_rate
    log.info("configuration changed (%s): tax rate is now %s", ", ".join(sorted(keys)), rate)
