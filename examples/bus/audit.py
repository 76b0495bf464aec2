"""audit: prints every invoice; also a bus node, but not addressed by ``--destination billing``."""

from __future__ import annotations

import logging

from pydantic import BaseModel

from streamlib import StreamApp
from streamlib.bus import Bus

log = logging.getLogger("audit")


class Invoice(BaseModel):
    order_id: int
    total: float
    tax_rate: float


app = StreamApp("audit")
bus = Bus(app)


@app.sink
async def audit(invoice: Invoice) -> None:
    log.info(
        "invoice for order %d: %.2f (tax rate %s)",
        invoice.order_id,
        invoice.total,
        invoice.tax_rate,
    )


@bus.on_refresh
def changed(keys: frozenset[str]) -> None:
    log.info("configuration changed: %s", ", ".join(sorted(keys)))
