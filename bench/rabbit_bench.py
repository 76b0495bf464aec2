"""RabbitMQ throughput and latency: streamlib vs the raw aio-pika best pattern vs FastStream.

    python -m bench rabbit [--messages N] [--warmup N] [--latency N] [--url URL] [--profile]

Every contender moves the same ~200-byte JSON payload, decoded into (or encoded from) the
same pydantic model, on the same broker in the same run, after a warm-up round. Publish:
persistent messages, publisher confirms on, to a topic exchange with one durable queue bound;
all publishes in flight, then every confirmation awaited. Consume: prefetch 250, one ack per
message (streamlib batches them), from a pre-filled durable queue, first to last message
handled. Latency: one message at a time, published by plain aio-pika, send to handler.
Batch consume: a sink taking ``list[Payload]`` (batch-size 250, prefetch 500) against
aio-pika validating the same batches and acking each with one ``multiple`` ack. send_many:
``app.send_many`` per window of publishes, against the raw publish row (the same work).
``--profile`` prints a cProfile of streamlib's runs instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from bench.common import (
    Clock,
    Handler,
    Payload,
    arguments,
    faststream_receive,
    payload,
    print_ratios,
    profiled,
    streamlib_receive,
    streamlib_send,
)
from bench.table import Run, Section
from streamlib import StreamApp

PREFETCH = 250
WINDOW = 5_000
"""Publishes in flight at once for the gather-based contenders."""
BATCH = 250
BATCH_PREFETCH = 500
"""Batch consume: twice the batch, so the next batch is delivered while one is handled."""


def streamlib_config(url: str, bindings: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "binders": {"rabbit": {"type": "rabbit", "url": url}},
        "bindings": bindings or {},
    }


async def declare(url: str, groups: list[str]) -> str:
    """A fresh destination: topic exchange with a durable queue per group bound with ``#``."""
    dest = f"bench-{uuid.uuid4().hex[:10]}"
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(dest, aio_pika.ExchangeType.TOPIC, durable=True)
        for group in groups:
            queue = await channel.declare_queue(f"{dest}.{group}", durable=True)
            await queue.bind(exchange, "#")
    return dest


async def cleanup(url: str, dest: str, groups: list[str]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for group in groups:
            await channel.queue_delete(f"{dest}.{group}")
        await channel.exchange_delete(dest)


async def publish_raw(url: str, dest: str, items: list[Payload]) -> float:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(dest)
        to_json = Payload.__pydantic_serializer__.to_json
        message = aio_pika.Message
        persistent = aio_pika.DeliveryMode.PERSISTENT
        start = time.perf_counter()
        for i in range(0, len(items), WINDOW):
            await asyncio.gather(
                *(
                    exchange.publish(
                        message(
                            to_json(item),
                            content_type="application/json",
                            delivery_mode=persistent,
                        ),
                        dest,
                    )
                    for item in items[i : i + WINDOW]
                )
            )
        return time.perf_counter() - start


async def publish_streamlib(url: str, dest: str, items: list[Payload]) -> float:
    return await streamlib_send(streamlib_config(url), dest, items)


async def send_many_streamlib(url: str, dest: str, items: list[Payload]) -> float:
    app = StreamApp("bench", config=streamlib_config(url))
    async with app.run():
        await app.send(dest, items[0])
        start = time.perf_counter()
        for i in range(0, len(items), WINDOW):
            await app.send_many(dest, items[i : i + WINDOW])
        return time.perf_counter() - start


async def publish_faststream(url: str, dest: str, items: list[Payload]) -> float:
    from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange

    broker = RabbitBroker(url, logger=None)
    exchange = RabbitExchange(dest, type=ExchangeType.TOPIC, durable=True)
    await broker.start()
    try:
        await broker.publish(items[0], exchange=exchange, routing_key=dest, persist=True)
        publish = broker.publish
        start = time.perf_counter()
        for i in range(0, len(items), WINDOW):
            await asyncio.gather(
                *(
                    publish(item, exchange=exchange, routing_key=dest, persist=True)
                    for item in items[i : i + WINDOW]
                )
            )
        return time.perf_counter() - start
    finally:
        await broker.stop()


async def consume_raw(url: str, dest: str, group: str, count: int, on: Handler) -> float:
    clock = Clock(count)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(f"{dest}.{group}", durable=True)
        validate = Payload.model_validate_json
        tick = clock.tick

        async def take(message: AbstractIncomingMessage) -> None:
            on(validate(message.body))
            tick()
            await message.ack()

        tag = await queue.consume(take)
        await clock.done.wait()
        await queue.cancel(tag)
    return clock.elapsed()


async def consume_streamlib(url: str, dest: str, group: str, count: int, on: Handler) -> float:
    bindings = {
        "take-in-0": {"destination": dest, "group": group, "consumer": {"prefetch": PREFETCH}}
    }
    return await streamlib_receive(streamlib_config(url, bindings), count, on)


async def consume_raw_batch(url: str, dest: str, group: str, count: int, on: Handler) -> float:
    clock = Clock(count)
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=BATCH_PREFETCH)
        queue = await channel.declare_queue(f"{dest}.{group}", durable=True)
        validate = Payload.model_validate_json
        tick = clock.tick
        batch: list[AbstractIncomingMessage] = []

        async def take(message: AbstractIncomingMessage) -> None:
            batch.append(message)
            if len(batch) < BATCH and clock.seen + len(batch) < count:
                return
            messages = batch[:]
            batch.clear()
            for item in [validate(m.body) for m in messages]:
                on(item)
                tick()
            await messages[-1].ack(multiple=True)

        tag = await queue.consume(take)
        await clock.done.wait()
        await queue.cancel(tag)
    return clock.elapsed()


async def consume_streamlib_batch(
    url: str, dest: str, group: str, count: int, on: Handler
) -> float:
    clock = Clock(count)
    consumer = {"prefetch": BATCH_PREFETCH, "batch-size": BATCH}
    bindings = {"take-in-0": {"destination": dest, "group": group, "consumer": consumer}}
    app = StreamApp("bench", config=streamlib_config(url, bindings))
    tick = clock.tick

    @app.sink
    async def take(items: list[Payload]) -> None:
        for item in items:
            on(item)
            tick()

    async with app.run():
        await clock.done.wait()
    return clock.elapsed()


async def consume_faststream(url: str, dest: str, group: str, count: int, on: Handler) -> float:
    from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue

    clock = Clock(count)
    broker = RabbitBroker(url, logger=None)
    exchange = RabbitExchange(dest, type=ExchangeType.TOPIC, durable=True)
    queue = RabbitQueue(f"{dest}.{group}", durable=True, routing_key="#")

    @broker.subscriber(queue, exchange, channel=Channel(prefetch_count=PREFETCH))
    async def take(item: Payload) -> None:
        on(item)
        clock.tick()

    return await faststream_receive(broker, clock)


def ignore(item: Payload) -> None:
    return None


async def latency(
    url: str, dest: str, group: str, count: int, consume: Consume
) -> tuple[float, float]:
    """(p50, p99) in ms of send-to-handler time, one message at a time."""
    delays: list[float] = []

    def record(item: Payload) -> None:
        delays.append(time.perf_counter() - item.amount)

    task = asyncio.create_task(consume(url, dest, group, count, record))
    connection = await aio_pika.connect(url)
    async with connection:
        channel: AbstractChannel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(dest)
        await asyncio.sleep(0.5)  # the consumer is subscribed
        to_json = Payload.__pydantic_serializer__.to_json
        for n in range(count):
            body = to_json(payload(n, time.perf_counter()))
            await exchange.publish(aio_pika.Message(body, content_type="application/json"), dest)
            await asyncio.sleep(0.001)
    await task
    ms = sorted(d * 1000 for d in delays)
    return statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]


Publish = Callable[[str, str, list[Payload]], Coroutine[Any, Any, float]]
Consume = Callable[[str, str, str, int, Handler], Coroutine[Any, Any, float]]

CONTENDERS = ("raw aio-pika", "streamlib", "faststream")
PUBLISHERS: dict[str, Publish] = dict(
    zip(CONTENDERS, (publish_raw, publish_streamlib, publish_faststream), strict=True)
)
CONSUMERS: dict[str, Consume] = dict(
    zip(CONTENDERS, (consume_raw, consume_streamlib, consume_faststream), strict=True)
)
GROUPS = {"raw aio-pika": "raw", "streamlib": "sl", "faststream": "fs"}
BATCH_CONSUMERS: dict[str, Consume] = {
    "raw aio-pika": consume_raw_batch,
    "streamlib": consume_streamlib_batch,
}


async def run(
    url: str, count: int, warmup: int, samples: int, only: str | None
) -> dict[str, float]:
    items = [payload(n) for n in range(count)]
    results: dict[str, float] = {}
    names = [n for n in CONTENDERS if only in (None, n)]
    groups = [GROUPS[n] for n in names]
    for name in names:
        dest = await declare(url, ["sink"])
        await PUBLISHERS[name](url, dest, items[:warmup])
        await cleanup(url, dest, ["sink"])
    for name in names:
        dest = await declare(url, ["sink"])
        results[f"publish {name}"] = count / await PUBLISHERS[name](url, dest, items)
        await cleanup(url, dest, ["sink"])
    if only in (None, "streamlib"):
        dest = await declare(url, ["sink"])
        results["send_many streamlib"] = count / await send_many_streamlib(url, dest, items)
        await cleanup(url, dest, ["sink"])
    dest = await declare(url, groups)
    await publish_streamlib(url, dest, items[:warmup])
    for name in names:
        await CONSUMERS[name](url, dest, GROUPS[name], warmup, ignore)
    await publish_streamlib(url, dest, items)
    for name in names:
        results[f"consume {name}"] = count / await CONSUMERS[name](
            url, dest, GROUPS[name], count, ignore
        )
    await cleanup(url, dest, groups)
    batched = [n for n in names if n in BATCH_CONSUMERS]
    dest = await declare(url, [GROUPS[n] for n in batched])
    await publish_streamlib(url, dest, items[:warmup])
    for name in batched:
        await BATCH_CONSUMERS[name](url, dest, GROUPS[name], warmup, ignore)
    await publish_streamlib(url, dest, items)
    for name in batched:
        results[f"batch consume {name}"] = count / await BATCH_CONSUMERS[name](
            url, dest, GROUPS[name], count, ignore
        )
    await cleanup(url, dest, [GROUPS[n] for n in batched])
    for name in names:
        dest = await declare(url, [GROUPS[name]])
        p50, p99 = await latency(url, dest, GROUPS[name], samples, CONSUMERS[name])
        results[f"latency {name} p50 ms"] = p50
        results[f"latency {name} p99 ms"] = p99
        await cleanup(url, dest, [GROUPS[name]])
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("STREAMLIB_TEST_RABBIT", "amqp://guest:guest@127.0.0.1:5672/"),
    )


def sections(args: argparse.Namespace) -> list[Section]:
    """The RabbitMQ rows of the table: publish with confirms, and consume."""
    url, count = args.url, args.messages
    items = [payload(n) for n in range(count)]

    def publishing(publish: Publish) -> Run:
        async def run(_: Any, n: int) -> float:
            dest = await declare(url, ["sink"])
            try:
                return await publish(url, dest, items[:n])
            finally:
                await cleanup(url, dest, ["sink"])

        return run

    def consuming(name: str) -> Run:
        return lambda dest, n: CONSUMERS[name](url, dest, GROUPS[name], n, ignore)

    async def filled() -> str:
        # Every contender's queue gets a copy of each message.
        dest = await declare(url, list(GROUPS.values()))
        await publish_streamlib(url, dest, items)
        return dest

    async def drop(dest: str) -> None:
        await cleanup(url, dest, list(GROUPS.values()))

    async def filled_batch() -> str:
        dest = await declare(url, [GROUPS[n] for n in BATCH_CONSUMERS])
        await publish_streamlib(url, dest, items)
        return dest

    async def drop_batch(dest: str) -> None:
        await cleanup(url, dest, [GROUPS[n] for n in BATCH_CONSUMERS])

    def batch_consuming(name: str) -> Run:
        return lambda dest, n: BATCH_CONSUMERS[name](url, dest, GROUPS[name], n, ignore)

    bulk = {name: publishing(PUBLISHERS[name]) for name in CONTENDERS if name == "raw aio-pika"}
    bulk["streamlib send_many"] = publishing(send_many_streamlib)
    return [
        Section(
            f"RabbitMQ send_many, windows of {WINDOW:,}, publisher confirms",
            count,
            bulk,
            "raw aio-pika",
            args.warmup,
        ),
        Section(
            f"RabbitMQ batch consume, list[T] sink, batches of {BATCH}, prefetch {BATCH_PREFETCH}",
            count,
            {name: batch_consuming(name) for name in BATCH_CONSUMERS},
            "raw aio-pika",
            args.warmup,
            prepare=filled_batch,
            cleanup=drop_batch,
            fresh=True,
        ),
        Section(
            "RabbitMQ publish, persistent, publisher confirms",
            count,
            {name: publishing(PUBLISHERS[name]) for name in CONTENDERS},
            CONTENDERS[0],
            args.warmup,
        ),
        Section(
            f"RabbitMQ consume into a pydantic model, prefetch {PREFETCH}, ack each",
            count,
            {name: consuming(name) for name in CONTENDERS},
            CONTENDERS[0],
            args.warmup,
            prepare=filled,
            cleanup=drop,
            fresh=True,
        ),
    ]


def report(results: dict[str, float]) -> None:
    for name, value in results.items():
        unit = "ms" if name.startswith("latency") else "msgs/s"
        shown = f"{value:>10.3f}" if unit == "ms" else f"{value:>10,.0f}"
        print(f"{name.removesuffix(' ms'):<32} {shown} {unit}")
    print_ratios(results, ("publish", "consume", "batch consume"), "raw aio-pika")
    bulk, raw = results.get("send_many streamlib"), results.get("publish raw aio-pika")
    if bulk and raw:
        print(f"send_many streamlib / raw aio-pika publish: {bulk / raw:.2f}x")
    ours_p99 = results.get("latency streamlib p99 ms")
    raw_p99 = results.get("latency raw aio-pika p99 ms")
    if ours_p99 is not None and raw_p99 is not None:
        print(f"latency p99 streamlib - raw aio-pika: {ours_p99 - raw_p99:+.3f} ms")


def main(argv: list[str]) -> int:
    parser = arguments("python -m bench rabbit")
    parser.add_argument("--latency", type=int, default=1_000, help="latency samples")
    add_arguments(parser)
    args = parser.parse_args(argv)
    print(f"RabbitMQ: {args.messages} messages of ~200 bytes")
    if args.profile:
        profiled(run(args.url, args.messages, args.warmup, args.latency, "streamlib"), report)
        return 0
    report(asyncio.run(run(args.url, args.messages, args.warmup, args.latency, None)))
    return 0
