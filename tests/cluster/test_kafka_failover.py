"""The broker leading a partition dies with SIGKILL while keyed messages flow through a
three-node Kafka cluster: nothing acknowledged is lost, the consumer carries on without a
restart and order per key holds."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from support.cluster import cluster, figures
from support.failover import Event, Traffic

from streamlib import StreamApp

pytestmark = [pytest.mark.anyio, pytest.mark.cluster, pytest.mark.kafka]

KEYS = [f"key-{n}" for n in range(6)]


async def leaders(bootstrap: list[str], topic: str) -> dict[int, tuple[int, list[int]]]:
    """Partition -> (leader node, replicas) of ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {p["partition"]: (p["leader"], p["replicas"]) for p in described["partitions"]}


async def test_the_leader_killed_mid_stream_loses_nothing_acknowledged(
    kafka_cluster: list[str],
) -> None:
    topic, group = f"failover-{uuid.uuid4().hex[:8]}", f"failover-{uuid.uuid4().hex[:8]}"
    config = {
        "binders": {
            "kafka": {
                "type": "kafka",
                "bootstrap-servers": kafka_cluster,
                "min-partition-count": 3,
            }
        },
        "default-binder": "kafka",
        "bindings": {"record-in-0": {"destination": topic, "group": group}},
    }
    app = StreamApp("failover", config=config)
    traffic = Traffic(app, topic, KEYS, keyed=True)

    @app.sink
    async def record(event: Event) -> None:
        traffic.record(event)

    killed: int | None = None
    async with app.run():
        traffic.start()
        try:
            await asyncio.sleep(3)
            layout = await leaders(kafka_cluster, topic)
            # The binder created the topic with the broker's default replication factor.
            assert all(len(replicas) == 3 for _, replicas in layout.values()), layout
            killed = layout[0][0]
            killed_at = time.monotonic()
            await asyncio.to_thread(cluster, "kill", "kafka", str(killed))
            await asyncio.sleep(7)
            await asyncio.to_thread(cluster, "start", "kafka", str(killed))
            killed = None
            await asyncio.sleep(2)
        finally:
            await traffic.stop()
            if killed is not None:
                await asyncio.to_thread(cluster, "start", "kafka", str(killed))
        await traffic.wait_for_everything_confirmed(90)
        health: dict[str, Any] = app.health()
    figures.append(traffic.summary("kafka", killed_at))
    assert traffic.lost() == 0
    traffic.firsts_in_order()
    assert health["status"] == "up", health
