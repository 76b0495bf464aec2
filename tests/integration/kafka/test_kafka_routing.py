"""Records sent through the shared producer land where Kafka's own clients put them: a keyed
record in the partition of the Java client's default partitioner, and every record once the
topic's metadata changed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from streamlib_kafka.testing import read_topic

from streamlib import StreamApp

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]

Config = Callable[..., dict[str, Any]]

PARTITIONS = 4
TIMEOUT = 20.0


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


def java_partition(key: bytes, partitions: int) -> int:
    """Kafka's DefaultPartitioner for a keyed record: murmur2, positive, modulo the count."""
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


async def test_keyed_records_go_to_the_java_clients_partition_and_unkeyed_ones_spread(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    topic = unique("routed")
    await create_topic(kafka_bootstrap, topic, PARTITIONS)
    keys = [f"customer-{n}".encode() for n in range(24)]
    app = StreamApp("routing", config=kafka_config())
    async with app.run():
        for n, key in enumerate(keys):
            await app.send(topic, b"keyed-%d" % n, key=key)
        for n in range(40):
            await app.send(topic, b"unkeyed-%d" % n)
        records = await read_topic(kafka_bootstrap, topic, len(keys) + 40, TIMEOUT, 0.5)
    keyed = {r.value: (r.key, r.partition) for r in records if r.value.startswith(b"keyed")}
    assert keyed == {
        b"keyed-%d" % n: (key, java_partition(key, PARTITIONS)) for n, key in enumerate(keys)
    }
    unkeyed = Counter(r.partition for r in records if r.value.startswith(b"unkeyed"))
    assert sum(unkeyed.values()) == 40
    assert set(unkeyed) <= set(range(PARTITIONS)) and len(unkeyed) > 1
