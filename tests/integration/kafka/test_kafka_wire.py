"""What the Kafka binder puts on the wire, read back with a raw aiokafka consumer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from pydantic import BaseModel
from streamlib_kafka import KafkaAttr
from streamlib_kafka.testing import read_topic

from streamlib import Message, StreamApp, select_partition
from streamlib.testing.collector import Collector

Config = Callable[..., dict[str, Any]]

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]


class Order(BaseModel):
    customer: str
    amount: int


async def test_partitioned_producer_writes_spring_headers_and_no_key(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    bindings = {dest: {"producer": {"partition-key": "payload.customer", "partition-count": 4}}}
    app = StreamApp("wire", config=kafka_config(bindings))
    customers = ["k0", "customer-000042", "日本", "Straße"]
    async with app.run():
        for customer in customers:
            await app.send(dest, Order(customer=customer, amount=1))
    records = await read_topic(kafka_bootstrap, dest, len(customers), 30.0, 0.5)
    assert sorted(r.partition for r in records) == sorted(select_partition(c, 4) for c in customers)
    for record in records:
        customer = orjson.loads(record.value)["customer"]
        assert record.partition == select_partition(customer, 4)
        assert record.key is None
        assert list(record.headers) == [
            ("scst_partition", str(record.partition).encode()),
            ("contentType", b"application/json"),
            (
                "spring_json_header_types",
                b'{"scst_partition":"java.lang.Integer","contentType":"java.lang.String"}',
            ),
        ]


async def test_plain_producer_writes_content_type_only_and_the_given_key(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("events")
    app = StreamApp("wire", config=kafka_config())
    async with app.run():
        await app.send(dest, Order(customer="c", amount=2), key="c-1")
        await app.send(dest, Order(customer="c", amount=3), headers={"x-trace": "t", "n": 7})
    first, second = await read_topic(kafka_bootstrap, dest, 2, 30.0, 0.5)
    assert first.key == b"c-1"
    assert list(first.headers) == [
        ("contentType", b"application/json"),
        ("spring_json_header_types", b'{"contentType":"java.lang.String"}'),
    ]
    assert second.key is None
    assert list(second.headers) == [
        ("contentType", b"application/json"),
        ("x-trace", b"t"),
        ("n", b"7"),
        (
            "spring_json_header_types",
            b'{"contentType":"java.lang.String","x-trace":"java.lang.String",'
            b'"n":"java.lang.Integer"}',
        ),
    ]


async def test_records_without_headers_are_consumed_with_kafka_extras(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("raw")
    got: Collector[Message[Order]] = Collector()
    app = StreamApp(
        "reader", config=kafka_config({"read-in-0": {"destination": dest, "group": "g"}})
    )

    @app.sink
    async def read(msg: Message[Order]) -> None:
        got.add(msg)

    async with app.run():
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(dest, b'{"customer":"x","amount":5}', key=b"x")
        finally:
            await producer.stop()
        [msg] = await got.wait_for(1, 30.0)
    assert msg.payload == Order(customer="x", amount=5)
    assert msg.headers == {}
    assert msg.key == b"x"
    assert msg.extra(KafkaAttr.topic) == dest
    assert msg.extra(KafkaAttr.partition) == 0 == msg.partition
    assert msg.extra(KafkaAttr.offset) == 0
    with pytest.deprecated_call(match="KafkaAttr.offset"):
        assert msg.offset == 0
    assert msg.extra(KafkaAttr.timestamp_type) == "CreateTime"
    assert msg.timestamp is not None
    assert msg.extra(KafkaAttr.timestamp) == int(msg.timestamp * 1000)
