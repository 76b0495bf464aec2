"""A Java producer with partitionKeyExpression/partitionCount -> partitioned streamlib consumers.

Every key must land on the partition ``streamlib.partitioning.select_partition`` predicts, so
the streamlib instance that owns that partition receives it, in order per key; a streamlib
producer with ``partition-key``/``partition-count`` must put each key where Java put it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from interop_support import Broker, Order, Spring, WireTap, wait_count
from streamlib_kafka import KafkaAttr

from streamlib import Message, StreamApp
from streamlib.partitioning import select_partition

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

# WIRE.md's vectors: non-BMP, MIN_VALUE hash, negative hashes, a tab.
KEYS = ["k0", "é", "日本", "😀", "polygenelubricants", "Straße", "customer-000042", "tab\there"]
INSTANCES = 2
# Spring's partitionKeyExpression payload.key, and streamlib's other two forms of partition-key.
PARTITION_KEYS = {"by-payload": "payload.key", "by-header": "headers.pk", "by-key": "key"}


async def envelopes(tap: WireTap, count: int) -> list[dict[str, Any]]:
    """One dict per record: note, key, and the envelope as the broker carried it."""
    out: list[dict[str, Any]] = []
    for r in await tap.read(count):
        if tap.broker.name == "kafka":
            order = orjson.loads(r.value)
            envelope = {"partition": r.partition, "record_key": r.key, "headers": list(r.headers)}
        else:
            order = orjson.loads(r.body)
            envelope = {
                "routing_key": r.routing_key,
                "content_type": r.content_type,
                "content_encoding": r.content_encoding,
                "delivery_mode": r.delivery_mode,
                "priority": r.priority,
                "headers": r.headers or {},
                "has_message_id": bool(r.message_id),
                "has_timestamp": r.timestamp is not None,
                "correlation_id": r.correlation_id,
                "type": r.type,
                "app_id": r.app_id,
            }
        out.append({**order, "envelope": envelope})
    return out


def partitioned_app(
    broker: Broker, dest: str, group: str, index: int, into: list[tuple[int, Message[Order]]]
) -> StreamApp:
    config = broker.streamlib_config(
        f"parts-{index}",
        {"collect-in-0": {"destination": dest, "group": group, "consumer": {"partitioned": True}}},
        instance_index=index,
        instance_count=INSTANCES,
    )
    app = StreamApp(f"parts-{index}", config=config)

    @app.sink
    async def collect(msg: Message[Order]) -> None:
        into.append((index, msg))

    return app


async def test_java_partitioned_producer_reaches_the_predicted_streamlib_instance(
    broker: Broker, spring: Spring, unique: Callable[[str], str], tmp_path: Path
) -> None:
    dest, group, total = unique("interop-parts"), "parts", 40
    # A Rabbit partitioned consumer reads the one queue of its instance index.
    count = 4 if broker.name == "kafka" else INSTANCES
    tap = WireTap(broker, dest)
    await tap.start()
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("\n".join(KEYS) + "\n", encoding="utf-8")
    producer = spring.start(
        "producer",
        {
            "spring.cloud.stream.bindings.out-0.destination": dest,
            "spring.cloud.stream.bindings.out-0.producer.partitionKeyExpression": "payload.key",
            "spring.cloud.stream.bindings.out-0.producer.partitionCount": count,
            "spring.cloud.stream.bindings.out-0.producer.requiredGroups": group,
            "spring.cloud.stream.kafka.bindings.out-0.producer.sync": "true",
            "interop.keys-file": keys_file,
            "interop.count": total,
        },
    )
    assert await producer.wait_exit() == 0, producer.log_tail()

    # One streamlib producer per form of partition-key; each must pick Java's partition.
    outputs = {
        f"{note}-out-0": {
            "destination": dest,
            "producer": {"partition-key": expression, "partition-count": count},
        }
        for note, expression in PARTITION_KEYS.items()
    }
    py_producer = StreamApp("py-producer", config=broker.streamlib_config("py-producer", outputs))
    received: list[tuple[int, Message[Order]]] = []
    first = partitioned_app(broker, dest, group, 0, received)
    second = partitioned_app(broker, dest, group, 1, received)
    seq = total
    async with first.run(), second.run(), py_producer.run():
        for note in PARTITION_KEYS:
            for _ in range(total):
                key = KEYS[seq % len(KEYS)]
                await py_producer.send(
                    f"{note}-out-0",
                    Order(key=key, seq=seq, note=note),
                    key=key if note == "by-key" else None,
                    headers={"pk": key} if note == "by-header" else None,
                )
                seq += 1
        await wait_count(received, seq, "records from the Java and streamlib producers")

    # The same key, sent by Java and by streamlib, travels in the same envelope.
    carried = await envelopes(tap, seq)
    assert len(carried) == seq
    where = "partition" if broker.name == "kafka" else "routing_key"
    for key in KEYS:
        by_note = {e["note"]: e["envelope"] for e in carried if e["key"] == key}
        assert by_note["by-payload"] == by_note["java"], (key, by_note)
        assert by_note["by-header"][where] == by_note["java"][where], (key, by_note)
        assert by_note["by-key"][where] == by_note["java"][where], (key, by_note)

    assert sorted(msg.payload.seq for _, msg in received) == list(range(seq))
    assert {msg.payload.note for _, msg in received} == {"java", *PARTITION_KEYS}
    for index, msg in received:
        expected = select_partition(msg.payload.key, count)
        assert expected % INSTANCES == index, (msg.payload.key, expected, index)
        if broker.name == "kafka":
            assert msg.extra(KafkaAttr.partition) == expected, msg.payload.key
            assert int(msg.headers["scst_partition"]) == expected, msg.payload.key
        assert msg.headers.get("contentType", "application/json").startswith("application/json")
    for key in KEYS:
        seqs = [msg.payload.seq for _, msg in received if msg.payload.key == key]
        assert seqs == sorted(seqs), key
        assert seqs, key
