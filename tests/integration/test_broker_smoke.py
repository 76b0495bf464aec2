"""One message through each real broker with the raw clients: the brokers are there and usable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from support.launcher import Broker, broker_ctl, dead_broker_hint, launcher_runs, rabbitmqctl

from streamlib.testing.brokers import require_kafka, require_rabbit

TIMEOUT = 30.0


@pytest.mark.kafka
def test_kafka_round_trip(kafka_bootstrap: str, unique: Callable[[str], str]) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = unique("smoke")
    payload = unique("payload").encode()

    async def scenario() -> bytes | None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            meta = await producer.send_and_wait(topic, payload, key=b"k")
            assert meta.topic == topic
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=unique("group"),
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), TIMEOUT)
            await consumer.commit()
        finally:
            await consumer.stop()
        assert record.key == b"k"
        value: bytes | None = record.value
        return value

    assert asyncio.run(scenario()) == payload


@pytest.mark.rabbit
def test_rabbit_round_trip(rabbit_url: str, unique: Callable[[str], str]) -> None:
    import aio_pika

    exchange_name = unique("smoke")
    payload = unique("payload").encode()

    async def scenario() -> bytes:
        connection = await aio_pika.connect(rabbit_url, timeout=TIMEOUT)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                exchange_name, aio_pika.ExchangeType.TOPIC, auto_delete=True
            )
            queue = await channel.declare_queue(f"{exchange_name}.q", exclusive=True)
            await queue.bind(exchange, routing_key="#")
            await exchange.publish(
                aio_pika.Message(payload, headers={"contentType": "text/plain"}),
                routing_key="smoke",
            )
            async with asyncio.timeout(TIMEOUT):
                while (message := await queue.get(fail=False)) is None:
                    await asyncio.sleep(0.02)
            await message.ack()
            assert message.headers == {"contentType": "text/plain"}
            await queue.delete(if_unused=False, if_empty=False)
            await exchange.delete()
            return message.body

    assert asyncio.run(scenario()) == payload


def _require_launcher(broker: Broker, address: str) -> None:
    if not launcher_runs(broker, address):
        pytest.fail(
            f"this test restarts {broker}, which needs the broker run by tools/brokers.py "
            f"(not {address}); run it with `make brokers` and the default addresses",
            pytrace=False,
        )


@pytest.mark.rabbit
@pytest.mark.slow
def test_rabbit_restart_keeps_durable_queue(rabbit_url: str, unique: Callable[[str], str]) -> None:
    import aio_pika

    _require_launcher("rabbit", rabbit_url)
    queue_name = unique("durable")
    payload = unique("payload").encode()

    async def publish() -> None:
        connection = await aio_pika.connect(rabbit_url, timeout=TIMEOUT)
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(queue_name, durable=True)
            await channel.default_exchange.publish(
                aio_pika.Message(payload, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue_name,
            )

    async def fetch() -> bytes | None:
        connection = await aio_pika.connect(rabbit_url, timeout=TIMEOUT)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name, durable=True)
            message = await queue.get(fail=False, no_ack=True)
            await queue.delete(if_unused=False, if_empty=False)
            return None if message is None else message.body

    asyncio.run(publish())
    assert queue_name in rabbitmqctl("list_queues", "-q", "name")
    broker_ctl("restart", "rabbit")
    assert queue_name in rabbitmqctl("list_queues", "-q", "name")
    assert asyncio.run(fetch()) == payload


@pytest.mark.kafka
@pytest.mark.slow
def test_kafka_kill_and_start_keeps_records(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    _require_launcher("kafka", kafka_bootstrap)
    topic = unique("durable")
    payload = unique("payload").encode()

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, payload)
        finally:
            await producer.stop()

    async def consume() -> bytes | None:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), TIMEOUT)
        finally:
            await consumer.stop()
        value: bytes | None = record.value
        return value

    asyncio.run(produce())
    broker_ctl("kill", "kafka")
    broker_ctl("start", "kafka")
    assert asyncio.run(consume()) == payload


@pytest.mark.rabbit
@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.parametrize("broker", ["rabbit", "kafka"])
def test_a_dead_broker_fails_the_next_test_at_once_naming_its_log(
    broker: Broker, kafka_bootstrap: str, rabbit_url: str
) -> None:
    address = rabbit_url if broker == "rabbit" else kafka_bootstrap
    require = require_rabbit if broker == "rabbit" else require_kafka
    _require_launcher(broker, address)
    broker_ctl("stop", broker)
    try:
        started = time.monotonic()
        with pytest.raises(pytest.fail.Exception) as failure:
            require(address, dead_broker_hint(broker, address))
        assert time.monotonic() - started < 10
        message = str(failure.value)
        assert "does not answer" in message and "Its log:" in message
        assert "guest:guest" not in message
    finally:
        broker_ctl("start", broker)
    require(address)
