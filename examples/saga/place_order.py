"""Send one order request to the orders service (``order-requests``).

python place_order.py --config config/orders.yaml o-7 alice 3
"""

from __future__ import annotations

import argparse
import asyncio

from model import Order

from streamlib import StreamApp


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("order_id")
    parser.add_argument("customer")
    parser.add_argument("quantity", type=int)
    parser.add_argument("--amount", type=float, default=10.0)
    parser.add_argument("--config", help="YAML config (the binder to send with)")
    args = parser.parse_args()
    order = Order(
        order_id=args.order_id,
        customer=args.customer,
        amount=args.amount,
        sku="book",
        quantity=args.quantity,
    )
    client = StreamApp("order-client", config=args.config)
    async with client.run():
        await client.send("order-requests", order, key=order.order_id)
    print(f"sent {order}")


if __name__ == "__main__":
    asyncio.run(main())
