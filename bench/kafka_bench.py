"""Kafka throughput: streamlib vs the raw aiokafka best pattern vs FastStream.

    python -m bench kafka [--messages N] [--warmup N] [--bootstrap HOST:PORT] [--profile]
                          [--tracing]

Every contender moves the same ~200-byte JSON payload, decoded into (or encoded from) the
same pydantic model, on the same broker in the same run, after a warm-up round; raw aiokafka
sends the same record bytes as streamlib (with the ``contentType`` headers). Produce:
pipelined sends, then wait for every acknowledgement (acks=all, idempotent, same linger and
batch size everywhere). Consume: from the first to the last message handled of a pre-filled
single-partition topic. Contenders run interleaved for ``--rounds`` rounds; the median counts,
as the machine is shared. ``--profile`` prints a cProfile of streamlib's runs instead.
``--tracing`` runs only streamlib's consume with metrics and tracing off, with the management
endpoint's metrics on, with tracing on (the OpenTelemetry SDK with a batching processor and an
exporter that drops every span) and sampling 1% of root spans.
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
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

from bench.common import (
    Clock,
    Payload,
    arguments,
    dropping_provider,
    faststream_receive,
    payload,
    print_ratios,
    profiled,
    streamlib_receive,
    streamlib_send,
)

LINGER_MS = 5
BATCH_SIZE = 65536
# The raw producer sends the same record bytes as streamlib: body plus Spring's headers.
HEADERS = [
    ("contentType", b"application/json"),
    ("spring_json_header_types", b'{"contentType":"java.lang.String"}'),
]


def producer_settings() -> dict[str, Any]:
    return {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": LINGER_MS,
        "max_batch_size": BATCH_SIZE,
    }


def streamlib_config(bootstrap: str, bindings: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "binders": {
            "kafka": {
                "type": "kafka",
                "bootstrap-servers": bootstrap,
                "producer": {"linger-ms": LINGER_MS, "batch-size": BATCH_SIZE},
            }
        },
        "bindings": bindings or {},
    }


async def create_topic(bootstrap: str) -> str:
    topic = f"bench-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    return topic


async def produce_raw(bootstrap: str, topic: str, items: list[Payload]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_settings())
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}")
        start = time.perf_counter()
        send = producer.send
        to_json = Payload.__pydantic_serializer__.to_json
        futures = [await send(topic, to_json(item), headers=HEADERS) for item in items]
        await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await producer.stop()


async def produce_streamlib(bootstrap: str, topic: str, items: list[Payload]) -> float:
    return await streamlib_send(streamlib_config(bootstrap), topic, items)


async def produce_faststream(bootstrap: str, topic: str, items: list[Payload]) -> float:
    from faststream.kafka import KafkaBroker

    broker = KafkaBroker(bootstrap, logger=None, **producer_settings())
    await broker.start()
    try:
        await broker.publish(items[0], topic=topic)
        start = time.perf_counter()
        publish = broker.publish
        futures = [await publish(item, topic=topic, no_confirm=True) for item in items]
        await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await broker.stop()


async def consume_raw(bootstrap: str, topic: str, count: int) -> float:
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
        while not clock.done.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            for records in batches.values():
                for record in records:
                    validate(record.value)
                    clock.tick()
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
    return clock.elapsed()


async def consume_streamlib(bootstrap: str, topic: str, count: int) -> float:
    bindings = {"take-in-0": {"destination": topic, "group": f"sl-{uuid.uuid4().hex[:8]}"}}
    return await streamlib_receive(streamlib_config(bootstrap, bindings), count)


async def consume_streamlib_metrics(bootstrap: str, topic: str, count: int) -> float:
    """streamlib with the management endpoint on, so every message is counted and timed."""
    bindings = {"take-in-0": {"destination": topic, "group": f"slm-{uuid.uuid4().hex[:8]}"}}
    config = {**streamlib_config(bootstrap, bindings), "management": {"port": 0}}
    return await streamlib_receive(config, count)


async def consume_streamlib_traced(
    bootstrap: str, topic: str, count: int, ratio: float = 1.0
) -> float:
    """streamlib with the OpenTelemetry SDK on: one span per message, exported nowhere (root
    spans sampled at ``ratio``)."""
    provider, exporter = dropping_provider(ratio)
    bindings = {"take-in-0": {"destination": topic, "group": f"slt-{uuid.uuid4().hex[:8]}"}}
    try:
        elapsed = await streamlib_receive(
            streamlib_config(bootstrap, bindings), count, tracer_provider=provider
        )
    finally:
        provider.shutdown()
    if ratio == 1.0:
        assert exporter.exported >= count, f"{exporter.exported} spans of {count} messages"
    return elapsed


async def consume_streamlib_sampled(bootstrap: str, topic: str, count: int) -> float:
    """streamlib with the SDK sampling 1% of root spans (``parentbased_traceidratio``)."""
    return await consume_streamlib_traced(bootstrap, topic, count, ratio=0.01)


async def consume_faststream(bootstrap: str, topic: str, count: int) -> float:
    from faststream.kafka import KafkaBroker

    clock = Clock(count)
    broker = KafkaBroker(bootstrap, logger=None)

    @broker.subscriber(topic, group_id=f"fs-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest")
    async def take(item: Payload) -> None:
        clock.tick()

    return await faststream_receive(broker, clock)


Produce = Callable[[str, str, list[Payload]], Awaitable[float]]
Consume = Callable[[str, str, int], Awaitable[float]]

PRODUCERS: dict[str, Produce] = {
    "raw aiokafka": produce_raw,
    "streamlib": produce_streamlib,
    "faststream": produce_faststream,
}
CONSUMERS: dict[str, Consume] = {
    "raw aiokafka": consume_raw,
    "streamlib": consume_streamlib,
    "streamlib + metrics": consume_streamlib_metrics,
    "streamlib traced": consume_streamlib_traced,
    "streamlib sampled 1%": consume_streamlib_sampled,
    "faststream": consume_faststream,
}


async def fill(bootstrap: str, count: int, traced: bool = False) -> str:
    """A fresh topic holding ``count`` messages as streamlib (and Spring) write them; traced:
    each with the ``traceparent`` of its send span."""
    topic = await create_topic(bootstrap)
    items = [payload(n) for n in range(count)]
    if not traced:
        await produce_streamlib(bootstrap, topic, items)
        return topic
    provider, _ = dropping_provider()
    try:
        await streamlib_send(streamlib_config(bootstrap), topic, items, tracer_provider=provider)
    finally:
        provider.shutdown()
    return topic


TRACING = ("streamlib", "streamlib + metrics", "streamlib traced", "streamlib sampled 1%")


async def run_tracing(
    bootstrap: str, count: int, warmup: int, rounds: int
) -> dict[str, list[float]]:
    """Consume rates of streamlib with tracing off and on, interleaved, from a topic without
    trace context (every span a root) and from one whose records all carry a ``traceparent``
    (every span continues it)."""
    topics = {
        "": await fill(bootstrap, count + 1),
        " (traceparent)": await fill(bootstrap, count + 1, traced=True),
    }
    for topic in topics.values():
        for name in TRACING:
            await CONSUMERS[name](bootstrap, topic, warmup)
    rates: dict[str, list[float]] = {}
    for _ in range(rounds):
        for label, topic in topics.items():
            for name in TRACING:
                elapsed = await CONSUMERS[name](bootstrap, topic, count + 1)
                rates.setdefault(f"consume {name}{label}", []).append(count / elapsed)
    return rates


async def run(
    bootstrap: str, count: int, warmup: int, rounds: int, only: str | None
) -> dict[str, list[float]]:
    """Rates (msgs/s) of every contender, ``rounds`` times, contenders interleaved."""
    items = [payload(n) for n in range(count)]
    rates: dict[str, list[float]] = {}
    producers = {k: v for k, v in PRODUCERS.items() if only in (None, k)}
    consumers = {k: v for k, v in CONSUMERS.items() if only in (None, k)}
    for produce in producers.values():
        await produce(bootstrap, await create_topic(bootstrap), items[:warmup])
    for _ in range(rounds):
        for name, produce in producers.items():
            elapsed = await produce(bootstrap, await create_topic(bootstrap), items)
            rates.setdefault(f"produce {name}", []).append(count / elapsed)
    topic = await fill(bootstrap, count + 1)
    for consume in consumers.values():
        await consume(bootstrap, topic, warmup)
    for _ in range(rounds):
        for name, consume in consumers.items():
            elapsed = await consume(bootstrap, topic, count + 1)
            rates.setdefault(f"consume {name}", []).append(count / elapsed)
    return rates


def report(rates: dict[str, list[float]]) -> None:
    """Median and best of the rounds; ratios of medians."""
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, values in rates.items():
        print(f"{name:<24} median {medians[name]:>9,.0f} msgs/s   best {max(values):>9,.0f}")
    print_ratios(medians, ("produce", "consume"), "raw aiokafka")
    for label in ("", " (traceparent)"):
        off = medians.get(f"consume streamlib{label}")
        for variant in ("+ metrics", "traced", "sampled 1%"):
            on = medians.get(f"consume streamlib {variant}{label}")
            if off and on:
                print(f"cost on consume{label}, {variant}: {(1 - on / off) * 100:.1f}%")


def main(argv: list[str]) -> int:
    parser = arguments("python -m bench kafka")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="only streamlib's consume: metrics and tracing off vs on",
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("STREAMLIB_TEST_KAFKA", "127.0.0.1:9092")
    )
    args = parser.parse_args(argv)
    print(f"Kafka at {args.bootstrap}: {args.messages} messages of ~200 bytes")
    if args.profile:
        only = "streamlib traced" if args.tracing else "streamlib"
        profiled(run(args.bootstrap, args.messages, args.warmup, 1, only), report)
        return 0
    if args.tracing:
        report(asyncio.run(run_tracing(args.bootstrap, args.messages, args.warmup, args.rounds)))
        return 0
    report(asyncio.run(run(args.bootstrap, args.messages, args.warmup, args.rounds, None)))
    return 0
