"""pytest plugin: the Kafka binder's conformance harness (fixture ``kafka_harness``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from streamlib.binder import Envelope
from streamlib.testing.harness import BinderHarness

from . import naming
from .dead_letter_queues import readable_headers


async def partition_count(bootstrap: str, topic: str) -> int:
    """Partitions of ``topic`` (0 when it does not exist), without creating it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return 0
        [described] = await admin.describe_topics([topic])
        return len(described["partitions"])
    finally:
        await admin.close()


async def read_topic(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout: float,
    settle: float,
    isolation_level: str = "read_uncommitted",
) -> list[Any]:
    """Every record of ``topic`` from the start, once ``expected`` are there (or ``timeout``
    passed), plus any that arrive within ``settle`` more."""
    count = await partition_count(bootstrap, topic)
    if not count:
        await asyncio.sleep(settle)
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation_level
    )
    await consumer.start()
    records: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(records) < expected and loop.time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        end = loop.time() + settle
        while loop.time() < end:
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


class KafkaHarness(BinderHarness):
    """The Kafka binder on the broker of the ``kafka_bootstrap`` fixture."""

    name = "kafka"
    settle = 1.0

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def binder_config(self) -> Mapping[str, Any]:
        return {
            "binders": {"kafka": {"type": "kafka", "bootstrap-servers": self.bootstrap}},
            "default-binder": "kafka",
        }

    async def dead_letters(self, destination: str, group: str, expected: int) -> list[Envelope]:
        topic = naming.dlq_topic(destination, group)
        records = await read_topic(self.bootstrap, topic, expected, self.timeout, self.settle)
        return [
            Envelope(
                r.value if r.value is not None else b"",
                readable_headers(r.headers),
                r.key,
                r.topic,
                r.partition,
                r.offset,
                r.timestamp / 1000.0,
            )
            for r in records
        ]


@pytest.fixture
async def kafka_harness(kafka_bootstrap: str) -> AsyncIterator[BinderHarness]:
    """The Kafka binder's conformance harness."""
    harness = KafkaHarness(kafka_bootstrap)
    yield harness
    await harness.aclose()
