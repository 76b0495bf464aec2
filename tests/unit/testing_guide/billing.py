"""A billing service: orders in, invoices out."""

from pydantic import BaseModel

from streamlib import StreamApp


class Order(BaseModel):
    id: int
    customer_id: str
    amount: float


class Invoice(BaseModel):
    order_id: int
    total: float


app = StreamApp(
    "billing",
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


@app.processor
async def bill(order: Order) -> Invoice:
    if order.amount < 0:
        raise ValueError(f"order {order.id} has a negative amount")
    return Invoice(order_id=order.id, total=round(order.amount * 1.2, 2))
