"""The RabbitMQ node an app is connected to, which leads the app's quorum queue, dies with
SIGKILL mid-stream: the app reconnects to another node and nothing confirmed is lost."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from support.cluster import cluster, figures
from support.failover import Event, Traffic

from streamlib import StreamApp

pytestmark = [pytest.mark.anyio, pytest.mark.cluster, pytest.mark.rabbit]

KEYS = [f"key-{n}" for n in range(4)]


def queue_leader(queue: str, node: int) -> str:
    """The node leading ``queue``, as node ``node`` sees it."""
    out = cluster("rabbitmqctl", str(node), "list_queues", "name", "leader", "--formatter", "json")
    return next(str(q["leader"]) for q in json.loads(out) if q["name"] == queue)


async def test_the_node_leading_a_quorum_queue_killed_mid_stream_loses_nothing_confirmed(
    rabbit_cluster: list[str],
) -> None:
    destination, group = f"failover-{uuid.uuid4().hex[:8]}", "workers"
    config = {
        "binders": {
            "rabbit": {"type": "rabbit", "addresses": rabbit_cluster, "reconnect-interval": 0.5}
        },
        "default-binder": "rabbit",
        "bindings": {
            "record-in-0": {
                "destination": destination,
                "group": group,
                "consumer": {"quorum": True, "delivery-limit": 10},
            }
        },
    }
    app = StreamApp("failover", config=config)
    traffic = Traffic(app, destination, KEYS, keyed=False)

    @app.sink
    async def record(event: Event) -> None:
        traffic.record(event)

    queue = f"{destination}.{group}"
    killed = False
    async with app.run():
        traffic.start()
        try:
            await asyncio.sleep(2)
            # The app is on node 1, the first address, so its queue was declared there.
            assert queue_leader(queue, 2) == "streamlib-c1@localhost"
            killed_at = time.monotonic()
            killed = True
            await asyncio.to_thread(cluster, "kill", "rabbit", "1")
            await asyncio.sleep(8)
            assert queue_leader(queue, 2) != "streamlib-c1@localhost"
            await asyncio.to_thread(cluster, "start", "rabbit", "1")
            killed = False
            await asyncio.sleep(2)
        finally:
            await traffic.stop()
            if killed:
                await asyncio.to_thread(cluster, "start", "rabbit", "1")
        await traffic.wait_for_everything_confirmed(60)
        health = app.health()
    figures.append(traffic.summary("rabbit", killed_at))
    assert traffic.lost() == 0
    assert health["status"] == "up", health
