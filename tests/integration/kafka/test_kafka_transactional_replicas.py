"""Two replicas of one transactional processor, both with the default instance-index: each
input's output appears exactly once for a read_committed reader, and no partition is stuck."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from app_process import create_topics
from pydantic import BaseModel
from streamlib_kafka.testing import read_topic

from streamlib import StreamApp

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]

Config = Callable[..., dict[str, Any]]

TIMEOUT = 30.0
PARTITIONS = 4
MESSAGES = 200


class Event(BaseModel):
    seq: int


def replica(config: dict[str, Any]) -> StreamApp:
    app = StreamApp("relay", config=config)

    @app.processor
    async def relay(event: Event) -> Event:
        await asyncio.sleep(0.001)
        return event

    return app


async def test_transactional_replicas_with_the_same_instance_index_each_output_once(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    source, target, group = unique("reps-in"), unique("reps-out"), unique("reps")
    await create_topics(kafka_bootstrap, {source: PARTITIONS, target: PARTITIONS})
    bindings = {
        "relay-in-0": {
            "destination": source,
            "group": group,
            "consumer": {"transactional": True},
        },
        "relay-out-0": {"destination": target},
    }
    first, second = replica(kafka_config(bindings)), replica(kafka_config(bindings))
    async with first.run(), second.run():
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for seq in range(MESSAGES):
                await producer.send(source, orjson.dumps({"seq": seq}), partition=seq % PARTITIONS)
            await producer.flush()
        finally:
            await producer.stop()
        outputs = await read_topic(
            kafka_bootstrap, target, MESSAGES, TIMEOUT, 1.0, isolation_level="read_committed"
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        assigned = [
            app.health()["binders"]["kafka"]["bindings"]["relay-in-0"]["assigned"]
            for app in (first, second)
        ]
    per_input = Counter(orjson.loads(r.value)["seq"] for r in outputs)
    assert per_input == dict.fromkeys(range(MESSAGES), 1)
    committed = {tp.partition: meta.offset for tp, meta in offsets.items()}
    assert committed == dict.fromkeys(range(PARTITIONS), MESSAGES // PARTITIONS)
    assert sorted(assigned[0] + assigned[1]) == list(range(PARTITIONS))
