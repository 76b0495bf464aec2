"""The broker leading a partition dies with SIGKILL while keyed messages flow through a
three-node Kafka cluster: nothing acknowledged is lost, the consumer carries on without a
restart and order per key holds."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from pydantic import BaseModel
from support.cluster import cluster, figures

from streamlib import StreamApp
from streamlib.errors import StreamlibError

pytestmark = [pytest.mark.anyio, pytest.mark.cluster, pytest.mark.kafka]

KEYS = [f"key-{n}" for n in range(6)]


class Event(BaseModel):
    key: str
    seq: int


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
                await app.send(topic, {"key": key, "seq": seq}, key=key)
            except StreamlibError:
                failed_sends += 1  # not acknowledged: sent again, in order
                await asyncio.sleep(0.2)
                continue
            acked[key].append(seq)
            seq += 1
            await asyncio.sleep(0.01)

    killed: int | None = None
    async with app.run():
        producers = [asyncio.create_task(produce(key)) for key in KEYS]
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
            stop.set()
            await asyncio.gather(*producers)
            if killed is not None:
                await asyncio.to_thread(cluster, "start", "kafka", str(killed))
        deadline = time.monotonic() + 90
        while any(set(acked[k]) - set(received[k]) for k in KEYS):
            assert time.monotonic() < deadline, "acknowledged messages never arrived"
            await asyncio.sleep(0.2)
        health: dict[str, Any] = app.health()
    lost = sum(len(set(acked[k]) - set(received[k])) for k in KEYS)
    total = sum(len(received[k]) for k in KEYS)
    duplicates = total - sum(len(set(received[k])) for k in KEYS)
    after = [t for t in times if t > killed_at]
    gaps = [b - a for a, b in zip([killed_at, *after], after, strict=False)]
    recovery = max(gaps, default=0.0)
    figures.append(
        f"kafka failover: acknowledged {sum(len(v) for v in acked.values())}, "
        f"received {total}, lost {lost}, duplicates {duplicates}, "
        f"failed sends {failed_sends}, recovery {recovery:.1f} s"
    )
    assert lost == 0
    for key in KEYS:
        firsts = list(dict.fromkeys(received[key]))
        assert firsts == sorted(firsts), f"{key} out of order: {received[key]}"
    assert health["status"] == "up", health
