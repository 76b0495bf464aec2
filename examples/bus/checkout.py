"""checkout: sends an order every second to ``orders``."""

from __future__ import annotations

import itertools

from pydantic import BaseModel

from streamlib import StreamApp
from streamlib.bus import Bus


class Order(BaseModel):
    id: int
    amount: float


app = StreamApp("checkout")
bus = Bus(app)
_ids = itertools.count(1)


@app.source(interval=1.0)
async def order() -> Order:
    return Order(id=next(_ids), amount=100.0)
