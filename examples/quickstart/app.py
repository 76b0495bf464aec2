"""orders -> billing (grouped, partitioned processor) -> audit sink, on the in-memory binder."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pydantic import BaseModel

from streamlib import Message, StreamApp


class Order(BaseModel):
    id: int
    customer_id: str
    amount: float


class Invoice(BaseModel):
    order_id: int
    customer_id: str
    total: float


app = StreamApp("quickstart", config=Path(__file__).with_name("streamlib.yaml"))
audited: asyncio.Queue[Invoice] = asyncio.Queue()


@app.processor
async def bill(order: Message[Order]) -> Invoice:
    if order.payload.amount < 0:
        raise ValueError(f"order {order.payload.id} has a negative amount")
    o = order.payload
    print(f"billing  order {o.id} of {o.customer_id} (partition {order.partition})")
    return Invoice(
        order_id=order.payload.id,
        customer_id=order.payload.customer_id,
        total=order.payload.amount * 1.2,
    )


@app.sink
async def audit(invoice: Invoice) -> None:
    print(f"auditing invoice for order {invoice.order_id}: {invoice.total:.2f}")
    await audited.put(invoice)


async def main() -> None:
    orders = [Order(id=n, customer_id=f"customer-{n % 3}", amount=10.0 * n) for n in range(1, 7)]
    orders.append(Order(id=99, customer_id="customer-0", amount=-1))
    async with app.run():
        for order in orders:
            await app.send("orders", order)
        invoices = [await asyncio.wait_for(audited.get(), 5) for _ in range(len(orders) - 1)]
    total = sum(i.total for i in invoices)
    print(f"done: {len(invoices)} invoices, total {total:.2f}; order 99 went to the DLQ")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
