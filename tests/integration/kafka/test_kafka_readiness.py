"""/ready on Kafka: 503 while the binding's group has not assigned it its partitions, 200
after. Another member of the group holds the rebalance (its revocation callback waits), so the
app's consumer is deterministically unassigned while the test asks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.coordinator.assignors.range import (  # type: ignore[import-untyped]
    RangePartitionAssignor,
)
from app_process import create_topics
from conftest import Config

from streamlib import StreamApp
from streamlib.testing import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]


class _Holding(ConsumerRebalanceListener):  # type: ignore[misc]
    """Keeps its member, once it owns partitions, from rejoining until ``release`` is set
    (aiokafka calls the revocation callback before every join, the first included)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.revoking = asyncio.Event()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if not revoked:
            return
        self.revoking.set()
        await self.release.wait()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


async def _ready(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(f"{url}/ready") as response:
        return response.status, await response.json()


async def test_ready_is_503_until_the_group_assigned_the_binding(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    topic, group = unique("ready"), unique("ready-group")
    app = StreamApp(
        "ready",
        config=kafka_config(
            {"take-in-0": {"destination": topic, "group": group}}, management={"port": 0}
        ),
    )
    handled: Collector[str] = Collector()

    @app.sink
    async def take(payload: str) -> None:
        handled.add(payload)

    await create_topics(kafka_bootstrap, {topic: 1})
    holding = _Holding()
    other = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        partition_assignment_strategy=(RangePartitionAssignor,),
    )
    await other.start()
    starting: asyncio.Task[None] | None = None
    try:
        other.subscribe([topic], listener=holding)
        async with asyncio.timeout(30):
            while not other.assignment():
                await other.getmany(timeout_ms=100)
        starting = asyncio.create_task(app.start())
        async with asyncio.timeout(30):
            while app.management_url is None:
                await asyncio.sleep(0.01)
            await holding.revoking.wait()  # the app's consumer joined; the rebalance is held
        async with aiohttp.ClientSession() as session:
            url = app.management_url
            while_held = await _ready(session, url)
            holding.release.set()
            await other.stop()  # leaves the group: the app's member gets the partitions
            await starting
            after = await _ready(session, url)
            await app.send(topic, "after")
            await handled.wait_for(1, timeout=30)
    finally:
        holding.release.set()
        await other.stop()
        if starting is not None and not starting.done():
            starting.cancel()
        await app.stop()
    assert while_held == (503, {"status": "not ready", "waiting-for": ["take-in-0"]})
    assert after == (200, {"status": "ready", "waiting-for": []})
    assert handled.items == ["after"]
