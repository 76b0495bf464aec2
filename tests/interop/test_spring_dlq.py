"""A failing Java consumer and a failing streamlib consumer dead-letter alike.

Both consume the same destination with the same group, one after the other, and give up after
``max-attempts``: their dead letters must land in the same DLQ with the same header names
(RabbitMQ: streamlib adds ``x-exception-fqcn``, which Spring writes only on Kafka), keeping
body, key and partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aio_pika
import pytest
from interop_support import RECEIVE_TIMEOUT, Broker, Order, Spring
from streamlib_kafka.testing import partition_count, read_topic

from streamlib import StreamApp

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

ATTEMPTS = 2


async def rabbit_dead_letters(url: str, queue: str, count: int) -> list[Any]:
    connection = await aio_pika.connect(url)
    letters: list[Any] = []
    async with connection:
        channel = await connection.channel()
        dlq = await channel.get_queue(queue, ensure=True)
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            while len(letters) < count:
                message = await dlq.get(no_ack=True, fail=False)
                if message is None:
                    await asyncio.sleep(0.1)
                else:
                    letters.append(message)
    return letters


async def next_dead_letter(broker: Broker, dest: str, group: str, seen: int) -> Any:
    """The dead letter after the ``seen`` ones already read."""
    if broker.name == "kafka":
        bootstrap = broker.binder["bootstrap-servers"]
        letters = await read_topic(bootstrap, f"error.{dest}.{group}", seen + 1, RECEIVE_TIMEOUT, 0)
        return letters[seen]
    # Reading a RabbitMQ queue takes the letters off it.
    [letter] = await rabbit_dead_letters(broker.binder["url"], f"{dest}.{group}.dlq", 1)
    return letter


async def test_java_and_streamlib_dead_letter_to_the_same_dlq_with_the_same_headers(
    broker: Broker, spring: Spring, unique: Callable[[str], str]
) -> None:
    dest, group = unique("interop-dlq"), "dg"
    # A 2-partition destination; key "k0" goes to partition 1. streamlib goes first, so it
    # creates the DLQ (Kafka: with the source's partition count), and Java follows it.
    producer_props = {"partition-key": "payload.key", "partition-count": 2}
    producer = StreamApp(
        "py-producer",
        config=broker.streamlib_config(
            "py-producer", {"orders-out-0": {"destination": dest, "producer": producer_props}}
        ),
    )
    consumer_props = {"max-attempts": ATTEMPTS, "back-off-initial-interval": 0.1, "dlq": True}
    failing = StreamApp(
        "py-failing",
        config=broker.streamlib_config(
            "py-failing",
            {"refuse-in-0": {"destination": dest, "group": group, "consumer": consumer_props}},
        ),
    )
    attempts: list[int] = []

    @failing.sink
    async def refuse(order: Order) -> None:
        attempts.append(order.seq)
        raise ValueError(f"refused {order.seq}")

    async with producer.run():
        await producer.output("orders-out-0")  # provisions the 2-partition topic first
        async with failing.run():
            await producer.send("orders-out-0", Order(key="k0", seq=0, note="py"), key="k0")
            streamlib_letter = await next_dead_letter(broker, dest, group, 0)
        assert attempts == [0] * ATTEMPTS

        java = spring.start(
            "failing",
            {
                "spring.cloud.stream.bindings.failing-in-0.destination": dest,
                "spring.cloud.stream.bindings.failing-in-0.group": group,
                "spring.cloud.stream.bindings.failing-in-0.consumer.maxAttempts": ATTEMPTS,
                "spring.cloud.stream.bindings.failing-in-0.consumer.backOffInitialInterval": 100,
                "spring.cloud.stream.kafka.bindings.failing-in-0.consumer.enableDlq": "true",
                "spring.cloud.stream.rabbit.bindings.failing-in-0.consumer.autoBindDlq": "true",
                "spring.cloud.stream.rabbit.bindings.failing-in-0.consumer.republishToDlq": "true",
            },
        )
        await java.wait_ready()
        await producer.send("orders-out-0", Order(key="k0", seq=1, note="py"), key="k0")
        spring_letter = await next_dead_letter(broker, dest, group, 1)
    # Java resumed after streamlib's committed position: it never saw message 0 again.
    assert [r["seq"] for r in java.records("attempt")] == [1] * ATTEMPTS
    if broker.name == "kafka":
        compare_kafka(spring_letter, streamlib_letter, dest)
        bootstrap = broker.binder["bootstrap-servers"]
        assert await partition_count(bootstrap, f"error.{dest}.{group}") == 2
    else:
        compare_rabbit(spring_letter, streamlib_letter)


def compare_kafka(spring_letter: Any, streamlib_letter: Any, dest: str) -> None:
    spring_names = [name for name, _ in spring_letter.headers]
    streamlib_names = [name for name, _ in streamlib_letter.headers]
    assert streamlib_names == spring_names, (spring_names, streamlib_names)
    for letter in (spring_letter, streamlib_letter):
        assert letter.key == b"k0", "key kept"
        assert letter.partition == 1, "same partition as the original"
        headers = dict(letter.headers)
        assert headers["x-original-topic"] == dest.encode()
        assert headers["x-original-partition"] == (1).to_bytes(4, "big")
        assert len(headers["x-original-offset"]) == 8
        assert len(headers["x-original-timestamp"]) == 8
        assert headers["x-original-timestamp-type"] == b"CreateTime"
        assert headers["scst_partition"] == b"1"
        assert Order.model_validate_json(letter.value).note == "py"


def describe(letter: Any) -> str:
    headers = {k: "..." if k.endswith("stacktrace") else v for k, v in letter.headers.items()}
    props = (letter.content_type, letter.delivery_mode, letter.priority, bool(letter.message_id))
    return f"headers {sorted(headers.items())} (content_type, delivery_mode, priority, id) {props}"


def compare_rabbit(spring_letter: Any, streamlib_letter: Any) -> None:
    spring_names = set(spring_letter.headers)
    streamlib_names = set(streamlib_letter.headers)
    evidence = f"\nSpring:    {describe(spring_letter)}\nstreamlib: {describe(streamlib_letter)}"
    assert spring_names <= streamlib_names, evidence
    assert streamlib_names - spring_names <= {"x-exception-fqcn"}, evidence
    for letter in (spring_letter, streamlib_letter):
        assert letter.content_type == spring_letter.content_type
        assert letter.delivery_mode == spring_letter.delivery_mode
        assert Order.model_validate_json(letter.body).note == "py"
