"""``max-in-flight`` bounds the publishes a producer has awaiting the broker's confirmation."""

from __future__ import annotations

import asyncio

import pytest
from pamqp.commands import Basic
from streamlib_rabbit import RabbitBinder

from streamlib import BinderContext

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit]


async def test_publishes_wait_beyond_max_in_flight(rabbit_url: str) -> None:
    binder = RabbitBinder(
        {"url": rabbit_url, "max-in-flight": 3}, BinderContext("inflight", 0, 1, "rabbit")
    )
    try:
        publisher = await binder._publisher()
        raw = await publisher.underlay()
        most = 0
        confirmations = []
        for seq in range(40):
            # The default exchange with no such queue: confirmed (unroutable) at once.
            confirmations.append(
                await publisher.publish("", "nobody-listens", b"%d" % seq, Basic.Properties())
            )
            most = max(most, len(raw.confirmations))
        await asyncio.gather(*confirmations)
    finally:
        await binder.aclose()
    assert most <= 3
