"""The RabbitMQ binder's reconnections show in ``/metrics``, and delivery goes on after them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
from faults.proxy import FaultProxy
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from streamlib import StreamApp
from streamlib.testing import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit]


async def _reconnects(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "streamlib_binder_reconnects_total":
                assert sample.labels == {"binder": "rabbit"}
                return sample.value
    raise AssertionError("no streamlib_binder_reconnects_total in /metrics")


async def test_reconnections_are_counted(rabbit_url: str, unique: Callable[[str], str]) -> None:
    destination = unique("reconnects")
    broker = URL(rabbit_url)
    got: Collector[str] = Collector()
    async with FaultProxy(broker.host or "127.0.0.1", broker.port or 5672) as proxy:
        url = str(broker.with_port(proxy.port))
        app = StreamApp(
            "reconnecting",
            config={
                "binders": {"rabbit": {"type": "rabbit", "url": url, "reconnect-interval": 0.2}},
                "management": {"port": 0},
                "bindings": {"take-in-0": {"destination": destination, "group": "g"}},
            },
        )

        @app.sink
        async def take(payload: str) -> None:
            got.add(payload)

        async with app.run(), aiohttp.ClientSession() as session:
            endpoint = app.management_url
            assert endpoint is not None
            await app.send(destination, "before")  # opens the producer connection too
            await got.wait_for(1, timeout=30)
            before = await _reconnects(session, endpoint)
            closed = proxy.cut()
            async with asyncio.timeout(30):
                while await _reconnects(session, endpoint) < closed:
                    await asyncio.sleep(0.05)
            await app.send(destination, "after")
            async with asyncio.timeout(30):
                while "after" not in got.items:
                    await got.wait_for(len(got) + 1, timeout=30)
            after = await _reconnects(session, endpoint)
    assert (before, closed, after) == (0, 2, 2)
    # "before" comes again when its ack was on the link that was cut (at least once).
    assert set(got.items) == {"before", "after"}
