"""Kafka batches: batch handlers and bulk sends vs the raw aiokafka batch patterns.

    python -m bench kafka-batch [--messages N] [--warmup N] [--rounds N] [--batch-size N]
                                [--bootstrap HOST:PORT] [--profile]

Consume, from a pre-filled single-partition topic, first to last message handled: streamlib's
sink taking ``list[Payload]`` (``batch-size`` per call) vs raw aiokafka ``getmany`` +
``model_validate_json`` + commit per batch vs FastStream's ``batch=True`` subscriber. Produce,
to a fresh single-partition topic, until every record is acknowledged: streamlib's
``send_many`` of every item vs raw aiokafka per-message ``send`` (pipelined) vs raw
``create_batch``/``send_batch``; the raw producers send the same record bytes as streamlib
(body plus Spring's ``contentType`` headers), with the same acks, idempotence, linger and
batch size. Contenders run interleaved for ``--rounds`` rounds; the median counts.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]

from bench.common import Clock, Payload, arguments, faststream_receive, payload, profiled
from bench.kafka_bench import HEADERS, create_topic, fill, producer_settings, streamlib_config
from streamlib import StreamApp

BATCH_SIZE = 500


async def produce_raw_send(bootstrap: str, topic: str, items: list[Payload]) -> float:
    """aiokafka ``send`` per message, all pipelined, then every acknowledgement awaited."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_settings())
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", headers=HEADERS)
        start = time.perf_counter()
        send = producer.send
        to_json = Payload.__pydantic_serializer__.to_json
        futures = [await send(topic, to_json(item), headers=HEADERS) for item in items]
        await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await producer.stop()


async def produce_raw_batch(bootstrap: str, topic: str, items: list[Payload]) -> float:
    """aiokafka ``create_batch`` filled until ``append`` says full, ``send_batch`` each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_settings())
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", headers=HEADERS)
        start = time.perf_counter()
        to_json = Payload.__pydantic_serializer__.to_json
        futures = []
        batch = producer.create_batch()
        for item in items:
            value = to_json(item)
            if batch.append(key=None, value=value, timestamp=None, headers=HEADERS) is None:
                batch.close()
                futures.append(await producer.send_batch(batch, topic, partition=0))
                batch = producer.create_batch()
                batch.append(key=None, value=value, timestamp=None, headers=HEADERS)
        batch.close()
        futures.append(await producer.send_batch(batch, topic, partition=0))
        await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await producer.stop()


async def produce_streamlib_many(bootstrap: str, topic: str, items: list[Payload]) -> float:
    """streamlib ``Output.send_many`` of every item, then its one confirmation awaited."""
    app = StreamApp("bench", config=streamlib_config(bootstrap))
    async with app.run():
        output = await app.output(topic)
        await (await output.send(items[0]))
        start = time.perf_counter()
        await (await output.send_many(items))
        return time.perf_counter() - start


async def consume_raw(bootstrap: str, topic: str, count: int, size: int) -> float:
    """aiokafka ``getmany`` + ``model_validate_json`` per record + commit per batch."""
    clock = Clock(count)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        validate = Payload.model_validate_json
        tick = clock.tick
        while not clock.done.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=size)
            for records in batches.values():
                for record in records:
                    validate(record.value)
                    tick()
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
    return clock.elapsed()


async def consume_streamlib(bootstrap: str, topic: str, count: int, size: int) -> float:
    """A streamlib sink taking ``list[Payload]``, ``batch-size`` per call."""
    clock = Clock(count)
    tick = clock.tick
    bindings = {
        "take-in-0": {
            "destination": topic,
            "group": f"sl-{uuid.uuid4().hex[:8]}",
            "consumer": {"batch-size": size},
        }
    }
    app = StreamApp("bench", config=streamlib_config(bootstrap, bindings))

    @app.sink
    async def take(items: list[Payload]) -> None:
        for _ in items:
            tick()

    async with app.run():
        await clock.done.wait()
    return clock.elapsed()


async def consume_faststream(bootstrap: str, topic: str, count: int, size: int) -> float:
    """FastStream's ``batch=True`` subscriber (its default acknowledgement)."""
    from faststream.kafka import KafkaBroker

    clock = Clock(count)
    tick = clock.tick
    broker = KafkaBroker(bootstrap, logger=None)

    @broker.subscriber(
        topic,
        group_id=f"fs-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        batch=True,
        max_records=size,
    )
    async def take(items: list[Payload]) -> None:
        for _ in items:
            tick()

    return await faststream_receive(broker, clock)


Produce = Callable[[str, str, list[Payload]], Awaitable[float]]
Consume = Callable[[str, str, int, int], Awaitable[float]]

PRODUCERS: dict[str, Produce] = {
    "raw aiokafka send": produce_raw_send,
    "raw aiokafka send_batch": produce_raw_batch,
    "streamlib send_many": produce_streamlib_many,
}
CONSUMERS: dict[str, Consume] = {
    "raw aiokafka getmany": consume_raw,
    "streamlib batch": consume_streamlib,
    "faststream batch": consume_faststream,
}


async def run(
    bootstrap: str, count: int, warmup: int, rounds: int, size: int, only: str | None
) -> dict[str, list[float]]:
    """Rates (msgs/s) of every contender, ``rounds`` times, contenders interleaved."""
    items = [payload(n) for n in range(count)]
    rates: dict[str, list[float]] = {}
    producers = {k: v for k, v in PRODUCERS.items() if only is None or only in k}
    consumers = {k: v for k, v in CONSUMERS.items() if only is None or only in k}
    for produce in producers.values():
        await produce(bootstrap, await create_topic(bootstrap), items[:warmup])
    for _ in range(rounds):
        for name, produce in producers.items():
            elapsed = await produce(bootstrap, await create_topic(bootstrap), items)
            rates.setdefault(f"produce {name}", []).append(count / elapsed)
    if consumers:
        topic = await fill(bootstrap, count + 1)
        for consume in consumers.values():
            await consume(bootstrap, topic, warmup, size)
        for _ in range(rounds):
            for name, consume in consumers.items():
                elapsed = await consume(bootstrap, topic, count + 1, size)
                rates.setdefault(f"consume {name}", []).append(count / elapsed)
    return rates


RATIOS = (
    ("consume streamlib batch", "consume raw aiokafka getmany"),
    ("consume streamlib batch", "consume faststream batch"),
    ("produce streamlib send_many", "produce raw aiokafka send"),
    ("produce streamlib send_many", "produce raw aiokafka send_batch"),
)


def report(rates: dict[str, list[float]]) -> None:
    """Median and best of the rounds; ratios of medians."""
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, values in rates.items():
        print(f"{name:<32} median {medians[name]:>9,.0f} msgs/s   best {max(values):>9,.0f}")
    for ours, theirs in RATIOS:
        if ours in medians and theirs in medians:
            print(f"{ours} / {theirs}: {medians[ours] / medians[theirs]:.2f}x")


def main(argv: list[str]) -> int:
    parser = arguments("python -m bench kafka-batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--only", help="run only the contenders whose name contains this")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("STREAMLIB_TEST_KAFKA", "127.0.0.1:9092")
    )
    args = parser.parse_args(argv)
    print(
        f"Kafka at {args.bootstrap}: {args.messages} messages of ~200 bytes, batches of "
        f"{args.batch_size}"
    )
    work: Any
    if args.profile:
        work = run(args.bootstrap, args.messages, args.warmup, 1, args.batch_size, "streamlib")
        profiled(work, report)
        return 0
    work = run(args.bootstrap, args.messages, args.warmup, args.rounds, args.batch_size, args.only)
    report(asyncio.run(work))
    return 0
