"""A processor's return value is checked against its annotation before it is sent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from streamlib import Message, StreamApp
from streamlib.testing import HandlerFailed, run_app

pytestmark = pytest.mark.anyio


class Invoice(BaseModel):
    order_id: int
    total: float


class Receipt(BaseModel):
    order_id: int


def _app() -> StreamApp:
    return StreamApp(
        "results",
        config={
            "bindings": {
                "bill-in-0": {
                    "destination": "orders",
                    "group": "billing",
                    "consumer": {"max-attempts": 2, "back-off-initial-interval": 0.01, "dlq": True},
                },
                "bill-out-0": {"destination": "invoices"},
            }
        },
    )


async def test_a_result_of_the_wrong_type_is_dead_lettered_naming_the_handler() -> None:
    app = _app()

    @app.processor
    async def bill(order: dict[str, Any]) -> Invoice:
        if order["id"] == 2:
            return Receipt(order_id=2)  # type: ignore[return-value]
        return Invoice(order_id=order["id"], total=1.0)

    async with run_app(app, raise_handler_errors=False) as running:
        await running.send("bill-in-0", {"id": 2})
        await running.send("bill-in-0", {"id": 3})
        [dead] = await running.dead_letters("bill-in-0", 1)
        sent = await running.next("bill-out-0", Invoice)
    assert dead.payload == {"id": 2}
    reason = dead.headers["x-exception-message"]
    assert "processor bill returned Receipt, not Invoice" in reason, reason
    assert sent.payload == Invoice(order_id=3, total=1.0)
    assert [m.payload for m in running.messages("bill-out-0", Invoice)] == [sent.payload]
    assert [handler for handler, _ in running.handler_errors] == ["bill"]  # not retried


async def test_a_message_payload_is_checked_against_its_type_argument() -> None:
    app = _app()

    @app.processor
    async def bill(order: dict[str, Any]) -> Message[Invoice]:
        return Message({"order_id": "not a number"})  # type: ignore[arg-type]

    async with run_app(app) as running:
        await running.send("bill-in-0", {"id": 1})
        with pytest.raises(HandlerFailed, match="processor bill returned dict, not Invoice"):
            await running.next("bill-out-0")
    assert running.messages("bill-out-0") == []


async def test_scalars_are_not_coerced_and_optional_results_may_be_none() -> None:
    app = _app()

    @app.processor
    async def bill(order: dict[str, Any]) -> int | None:
        return None if order["id"] == 1 else str(order["id"])  # type: ignore[return-value]

    async with run_app(app, raise_handler_errors=False) as running:
        await running.send("bill-in-0", {"id": 1})
        await running.send("bill-in-0", {"id": 2})
        [dead] = await running.dead_letters("bill-in-0", 1)
    assert dead.payload == {"id": 2}
    assert "processor bill returned str, not int" in dead.headers["x-exception-message"]
    assert running.messages("bill-out-0") == []


async def test_a_source_result_is_checked_too() -> None:
    app = StreamApp("ticks")
    values = iter(["one", 2])

    @app.source(interval=0.01)
    async def tick() -> int:
        return next(values, 3)  # type: ignore[return-value]

    async with run_app(app, raise_handler_errors=False) as running:
        first = await running.next("tick-out-0")
    assert first.payload == 2
    [(handler, error)] = running.handler_errors[:1]
    assert handler == "tick"
    assert str(error).startswith("source tick returned str, not int")


@pytest.mark.kafka
async def test_on_kafka_a_wrong_result_is_dead_lettered_and_the_next_record_goes_on(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    orders, group = unique("results-orders"), unique("results-billing")
    app = StreamApp(
        "results-kafka",
        config={
            "binders": {"kafka": {"type": "kafka", "bootstrap-servers": kafka_bootstrap}},
            "bindings": {
                "bill-in-0": {
                    "destination": orders,
                    "group": group,
                    "consumer": {"max-attempts": 3, "back-off-initial-interval": 0.01, "dlq": True},
                },
                "bill-out-0": {"destination": unique("results-invoices")},
            },
        },
    )
    handled: list[int] = []

    @app.processor
    async def bill(order: dict[str, Any]) -> Invoice:
        handled.append(order["id"])
        if order["id"] == 1:
            return {"order_id": 1, "total": 1.0}  # type: ignore[return-value]
        return Invoice(order_id=order["id"], total=2.0)

    async with run_app(app, binder=None, raise_handler_errors=False, timeout=30) as running:
        await running.send("bill-in-0", {"id": 1}, key="c-1")
        await running.send("bill-in-0", {"id": 2}, key="c-1")
        [dead] = await running.dead_letters("bill-in-0", 1)
        sent = await running.next("bill-out-0", Invoice)
    assert handled == [1, 2]  # not retried
    assert dead.payload == {"id": 1} and dead.key == b"c-1"
    assert dead.headers["x-exception-fqcn"] == b"streamlib.errors.MessageConversionError"
    assert dead.headers["x-exception-message"] == b"processor bill returned dict, not Invoice"
    assert sent.payload == Invoice(order_id=2, total=2.0)
    assert [m.payload for m in running.messages("bill-out-0", Invoice)] == [sent.payload]
