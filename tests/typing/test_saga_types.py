"""Saga decorators keep their types under mypy --strict."""

from typing import Any, assert_type

from pydantic import BaseModel

from streamlib import StreamApp
from streamlib.saga import Orchestrator, Participant, Saga, SagaRecord, Step


class Order(BaseModel):
    order_id: str


class Reserve(BaseModel):
    order_id: str


class Reserved(BaseModel):
    ok: bool


saga = Saga("typing-saga", Order)
assert_type(saga, Saga[Order])


@saga.local()
async def create(order: Order) -> Order:
    return order


assert_type(create, Step[Order])


@create.compensate
async def undo(order: Order) -> None:
    return None


@saga.remote(destination="payments")
def reserve(order: Order) -> Reserve:
    return Reserve(order_id=order.order_id)


assert_type(reserve, Step[Order])


@reserve.on_reply
def read(order: Order, reply: Any) -> Order:
    return order


app = StreamApp("typing-saga")
participant = Participant(app, "payments")


@participant.handler(Reserve)
async def handle(cmd: Reserve) -> Reserved:
    assert_type(cmd, Reserve)
    return Reserved(ok=True)


async def use(orchestrator: Orchestrator) -> None:
    saga_id = await orchestrator.start(saga, Order(order_id="o-1"))
    assert_type(saga_id, str)
    assert_type(await orchestrator.wait(saga_id), SagaRecord)
