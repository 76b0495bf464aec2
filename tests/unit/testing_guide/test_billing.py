import pytest
from billing import Invoice, Order, app

from streamlib.testing import run_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_an_order_is_billed() -> None:
    async with run_app(app) as running:
        await running.send("bill-in-0", Order(id=1, customer_id="c-1", amount=10.0))
        invoice = await running.next("bill-out-0", Invoice)
    assert invoice.payload == Invoice(order_id=1, total=12.0)
    assert invoice.headers["contentType"] == "application/json"


async def test_a_negative_amount_is_dead_lettered() -> None:
    async with run_app(app, raise_handler_errors=False) as running:
        await running.send("bill-in-0", Order(id=2, customer_id="c-2", amount=-1), key="c-2")
        [dead] = await running.dead_letters("bill-in-0", 1, Order)
    assert dead.payload.id == 2 and dead.key == b"c-2"
    assert dead.headers["x-exception-message"] == "order 2 has a negative amount"
    assert running.messages("bill-out-0") == []
    assert [handler for handler, _ in running.handler_errors] == ["bill", "bill"]
