"""Round-trip health check for a broker, run by tools/brokers.py with a Python that has the clients.

    python tools/broker_health.py kafka 127.0.0.1:9092 [--timeout 60]
    python tools/broker_health.py rabbit amqp://guest:guest@127.0.0.1:5672/ [--timeout 60]

Kafka: produce one record to topic `streamlib.health` and read it back through a consumer group
(so the group coordinator and __consumer_offsets are ready too). RabbitMQ: declare a temporary
queue, publish one message through the default exchange and get it back. Retries until the
timeout; exit status 0 when the round trip worked, 1 otherwise (last error on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import uuid

HEALTH_TOPIC = "streamlib.health"
HEALTH_GROUP = "streamlib.health"


async def kafka_round_trip(bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    token = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await producer.start()
    try:
        await producer.send_and_wait(HEALTH_TOPIC, token)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        HEALTH_TOPIC,
        bootstrap_servers=bootstrap,
        group_id=HEALTH_GROUP,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            values = [rec.value for recs in batches.values() for rec in recs]
            if values:
                await consumer.commit()
            if token in values:
                return
    finally:
        await consumer.stop()


async def rabbit_round_trip(url: str) -> None:
    import aio_pika

    token = uuid.uuid4().hex.encode()
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            f"streamlib.health.{token[:8].decode()}", exclusive=True, auto_delete=True
        )
        await channel.default_exchange.publish(aio_pika.Message(token), routing_key=queue.name)
        for _ in range(100):
            message = await queue.get(fail=False, no_ack=True)
            if message is not None:
                if message.body == token:
                    return
            else:
                await asyncio.sleep(0.05)
        raise RuntimeError("published message did not come back")


async def check(broker: str, address: str, budget: float) -> str | None:
    deadline = time.monotonic() + budget
    last = "no attempt"
    while time.monotonic() < deadline:
        remaining = deadline - time.monotonic()
        try:
            probe = kafka_round_trip(address) if broker == "kafka" else rabbit_round_trip(address)
            await asyncio.wait_for(probe, timeout=min(remaining, 30.0))
            return None
        except Exception as exc:
            last = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(0.5)
    return last


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("broker", choices=["kafka", "rabbit"])
    parser.add_argument("address")
    parser.add_argument("--timeout", type=float, default=60.0)
    ns = parser.parse_args()
    # The clients log retries (unknown topic, coordinator not ready) while the broker warms up.
    for name in ("aiokafka", "aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    error = asyncio.run(check(ns.broker, ns.address, ns.timeout))
    if error is not None:
        print(f"{ns.broker} at {ns.address}: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
