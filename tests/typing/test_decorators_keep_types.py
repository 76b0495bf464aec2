"""Decorators return the function unchanged, so handlers stay typed under mypy --strict."""

from typing import assert_type

from pydantic import BaseModel

from streamlib import Message, StreamApp


class Order(BaseModel):
    id: int


class Invoice(BaseModel):
    order_id: int


app = StreamApp("typing")


@app.processor
async def bill(order: Order) -> Invoice:
    return Invoice(order_id=order.id)


@app.sink
async def audit(msg: Message[Invoice]) -> None:
    assert_type(msg.payload, Invoice)
    assert_type(msg.partition, int | None)


@app.sink
def sync_audit(invoice: Invoice) -> None:
    return None


@app.source(interval=1.0)
async def tick() -> Order:
    return Order(id=1)


async def _check() -> None:
    assert_type(await bill(Order(id=1)), Invoice)
    assert_type(await tick(), Order)
    assert_type(sync_audit(Invoice(order_id=1)), None)


def test_decorated_functions_are_the_originals() -> None:
    assert bill.__name__ == "bill" and audit.__name__ == "audit"
    assert tick.__name__ == "tick" and sync_audit.__name__ == "sync_audit"


@app.processor()
async def bill_again(order: Order) -> Invoice:
    return Invoice(order_id=order.id)


@app.sink()
async def audit_again(invoice: Invoice) -> None:
    return None


@app.source
async def tick_every_second() -> Order:
    return Order(id=2)


@app.source()
async def tick_by_default() -> Order:
    return Order(id=3)


async def _check_forms() -> None:
    assert_type(await bill_again(Order(id=1)), Invoice)
    assert_type(await audit_again(Invoice(order_id=1)), None)
    assert_type(await tick_every_second(), Order)
    assert_type(await tick_by_default(), Order)


@app.processor
async def bill_many(orders: list[Order]) -> list[Invoice]:
    return [Invoice(order_id=order.id) for order in orders]


@app.sink
async def audit_many(msgs: list[Message[Invoice]]) -> None:
    assert_type(msgs[0].payload, Invoice)


async def _check_batches() -> None:
    assert_type(await bill_many([Order(id=1)]), list[Invoice])
    assert_type(await app.send_many("orders", [Order(id=1)], key="k"), None)
    sender = await app.output("orders")
    confirm = await sender.send_many([Order(id=1)])
    assert_type(await confirm, None)
