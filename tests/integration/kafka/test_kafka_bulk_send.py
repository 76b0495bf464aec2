"""``send_many`` on Kafka: record batches per partition, complete and in order, one
confirmation for all, and a refusal by the broker raised naming topic and partition."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner  # type: ignore[import-untyped]
from app_process import create_topics
from batch_binding import kafka_binder, shrink_limit
from streamlib_kafka.testing import read_topic

from streamlib.binder import Envelope, ProducerProperties, ProducerSpec, PublishError

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]

TIMEOUT = 30.0
RECORDS = 10_000


@pytest.mark.parametrize("partitions", [1, 3])
async def test_send_many_delivers_every_record_in_order_per_partition(
    kafka_bootstrap: str, unique: Callable[[str], str], partitions: int
) -> None:
    topic = unique("bulk")
    await create_topics(kafka_bootstrap, {topic: partitions})
    # Keyed records go where aiokafka's partitioner puts their key; keyless ones share one.
    keys = [None if seq % 5 == 0 else b"k%d" % (seq % 7) for seq in range(RECORDS)]
    envelopes = [
        Envelope(orjson.dumps({"seq": seq}), {"contentType": "application/json"}, key)
        for seq, key in enumerate(keys)
    ]
    async with kafka_binder(kafka_bootstrap) as binder:
        output = await binder.bind_producer(ProducerSpec("out-0", topic, ProducerProperties()))
        confirmation = await output.send_many(envelopes)
        await confirmation
    records = await read_topic(kafka_bootstrap, topic, RECORDS, TIMEOUT, 0.5)
    assert sorted(orjson.loads(r.value)["seq"] for r in records) == list(range(RECORDS))
    seqs: dict[int, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        seqs[record.partition].append(orjson.loads(record.value)["seq"])
    assert all(s == sorted(s) for s in seqs.values())
    every = list(range(partitions))
    partition_of = {r.key: r.partition for r in records}
    for key, partition in partition_of.items():
        if key is not None:
            assert partition == DefaultPartitioner()(key, every, every)
    assert len({r.partition for r in records if r.key is None}) == 1
    headers = dict(records[0].headers)
    assert headers["contentType"] == b"application/json"
    assert orjson.loads(headers["spring_json_header_types"]) == {"contentType": "java.lang.String"}


async def test_send_many_refused_by_the_broker_raises_naming_topic_and_partition(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    topic = unique("bulk-refused")
    await create_topics(kafka_bootstrap, {topic: 2})
    async with kafka_binder(kafka_bootstrap) as binder:
        output = await binder.bind_producer(ProducerSpec("out-0", topic, ProducerProperties()))
        await shrink_limit(kafka_bootstrap, topic, 2000)
        small = [Envelope(b"x" * 100, partition=0) for _ in range(5)]
        await (await output.send_many(small))
        # Each record fits, their batch for partition 1 does not.
        confirmation = await output.send_many([Envelope(b"y" * 500, partition=1)] * 10)
        with pytest.raises(PublishError) as info:
            await confirmation
    message = str(info.value)
    assert f"{topic!r} partition 1" in message and "MESSAGE_SIZE_TOO_LARGE" in message
    records = await read_topic(kafka_bootstrap, topic, 5, TIMEOUT, 0.5)
    assert sorted((r.partition, r.value) for r in records) == [(0, b"x" * 100)] * 5
