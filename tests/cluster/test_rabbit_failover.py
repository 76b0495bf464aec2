"""The RabbitMQ node an app is connected to, which leads the app's quorum queue, dies with
SIGKILL mid-stream: the app reconnects to another node and nothing confirmed is lost."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict

import pytest
from pydantic import BaseModel
from support.cluster import cluster, figures

from streamlib import StreamApp
from streamlib.errors import StreamlibError

pytestmark = [pytest.mark.anyio, pytest.mark.cluster, pytest.mark.rabbit]

KEYS = [f"key-{n}" for n in range(4)]


class Event(BaseModel):
    key: str
    seq: int


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
    received: dict[str, list[int]] = defaultdict(list)
    times: list[float] = []

    @app.sink
    async def record(event: Event) -> None:
        received[event.key].append(event.seq)
        times.append(time.monotonic())

    acked: dict[str, list[int]] = defaultdict(list)
    failed_sends = 0
    stop = asyncio.Event()

    async def produce(key: str) -> None:
        nonlocal failed_sends
        seq = 0
        while not stop.is_set():
            try:
                await app.send(destination, {"key": key, "seq": seq})
            except StreamlibError:
                failed_sends += 1  # not confirmed: sent again, in order
                await asyncio.sleep(0.2)
                continue
            acked[key].append(seq)
            seq += 1
            await asyncio.sleep(0.01)

    queue = f"{destination}.{group}"
    killed = False
    async with app.run():
        producers = [asyncio.create_task(produce(key)) for key in KEYS]
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
            stop.set()
            await asyncio.gather(*producers)
            if killed:
                await asyncio.to_thread(cluster, "start", "rabbit", "1")
        deadline = time.monotonic() + 60
        while any(set(acked[k]) - set(received[k]) for k in KEYS):
            assert time.monotonic() < deadline, "confirmed messages never arrived"
            await asyncio.sleep(0.2)
        health = app.health()
    lost = sum(len(set(acked[k]) - set(received[k])) for k in KEYS)
    total = sum(len(received[k]) for k in KEYS)
    duplicates = total - sum(len(set(received[k])) for k in KEYS)
    after = [t for t in times if t > killed_at]
    gaps = [b - a for a, b in zip([killed_at, *after], after, strict=False)]
    recovery = max(gaps, default=0.0)
    figures.append(
        f"rabbit failover: confirmed {sum(len(v) for v in acked.values())}, "
        f"received {total}, lost {lost}, duplicates {duplicates}, "
        f"failed sends {failed_sends}, recovery {recovery:.1f} s"
    )
    assert lost == 0
    assert health["status"] == "up", health
