"""The create-order saga shared by the three services: data, commands, replies, steps.

1. create_order     local: the order is recorded as pending     (compensation: reject it)
2. reserve_credit   payments: the customer's credit is reserved  (compensation: release it)
3. reserve_stock    inventory: the items are reserved            (compensation: release them)
4. approve_order    local, retriable: after the pivot, never compensated
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from streamlib.saga import Saga


class Order(BaseModel):
    order_id: str
    customer: str
    amount: float
    sku: str
    quantity: int
    status: str = "new"
    credit_reservation: str | None = None


class ReserveCredit(BaseModel):
    order_id: str
    customer: str
    amount: float


class ReleaseCredit(BaseModel):
    order_id: str
    customer: str


class CreditReserved(BaseModel):
    reservation: str


class ReserveStock(BaseModel):
    order_id: str
    sku: str
    quantity: int


class ReleaseStock(BaseModel):
    order_id: str
    sku: str


def order_saga(payments: str = "payments", inventory: str = "inventory") -> Saga[Order]:
    """The saga, sending to the given participant destinations (or binding names)."""
    saga = Saga("create-order", Order)

    @saga.local()
    async def create_order(order: Order) -> Order:
        return order.model_copy(update={"status": "pending"})

    @create_order.compensate
    async def reject_order(order: Order) -> Order:
        return order.model_copy(update={"status": "rejected"})

    @saga.remote(destination=payments, timeout=10)
    def reserve_credit(order: Order) -> ReserveCredit:
        return ReserveCredit(order_id=order.order_id, customer=order.customer, amount=order.amount)

    @reserve_credit.on_reply
    def credit_reserved(order: Order, reply: Any) -> Order:
        reservation = CreditReserved.model_validate(reply).reservation
        return order.model_copy(update={"credit_reservation": reservation})

    @reserve_credit.compensate_remote(destination=payments)
    def release_credit(order: Order) -> ReleaseCredit:
        return ReleaseCredit(order_id=order.order_id, customer=order.customer)

    @saga.remote(destination=inventory, timeout=10)
    def reserve_stock(order: Order) -> ReserveStock:
        return ReserveStock(order_id=order.order_id, sku=order.sku, quantity=order.quantity)

    @reserve_stock.compensate_remote(destination=inventory)
    def release_stock(order: Order) -> ReleaseStock:
        return ReleaseStock(order_id=order.order_id, sku=order.sku)

    @saga.local(retriable=True)
    async def approve_order(order: Order) -> Order:
        return order.model_copy(update={"status": "approved"})

    return saga
