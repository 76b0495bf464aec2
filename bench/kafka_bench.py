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

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from bench.common import (
    Clock,
    Payload,
    arguments,
    dropping_provider,
    faststream_receive,
    payload,
    profiled,
    streamlib_receive,
    streamlib_send,
)
from bench.table import Run, Section, lazy, report, run_rounds
from streamlib import StreamApp
from streamlib._dispatch import HandlerDispatcher
from streamlib._metrics import BindingMetrics
from streamlib.binder import ACK, Envelope, Outcome
from streamlib.converters import PayloadDecoder
from streamlib.retry import RetryPolicy
from streamlib.tracing import Tracing

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


async def create_topic(bootstrap: str, partitions: int = 1) -> str:
    topic = f"bench-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
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


async def produce_raw_plain(bootstrap: str, topic: str, items: list[Payload]) -> float:
    """What a user of aiokafka writes: the value only, no headers."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_settings())
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}")
        start = time.perf_counter()
        send = producer.send
        to_json = Payload.__pydantic_serializer__.to_json
        futures = [await send(topic, to_json(item)) for item in items]
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
    return await _consume_raw(bootstrap, topic, count, Payload.model_validate_json)


async def consume_raw_dict(bootstrap: str, topic: str, count: int) -> float:
    return await _consume_raw(bootstrap, topic, count, orjson.loads)


async def _consume_raw(
    bootstrap: str, topic: str, count: int, validate: Callable[[bytes], Any]
) -> float:
    """aiokafka ``getmany``, decode each record, commit after each batch."""
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


async def consume_streamlib_dict(bootstrap: str, topic: str, count: int) -> float:
    bindings = {"take-in-0": {"destination": topic, "group": f"sld-{uuid.uuid4().hex[:8]}"}}
    return await streamlib_receive(streamlib_config(bootstrap, bindings), count, into=dict)


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


async def consume_faststream_batch(bootstrap: str, topic: str, count: int) -> float:
    from faststream.kafka import KafkaBroker

    clock = Clock(count)
    broker = KafkaBroker(bootstrap, logger=None)

    @broker.subscriber(
        topic,
        group_id=f"fsb-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        batch=True,
        max_records=500,
    )
    async def take(items: list[Payload]) -> None:
        for _ in items:
            clock.tick()

    return await faststream_receive(broker, clock)


Produce = Callable[[str, str, list[Payload]], Awaitable[float]]
Consume = Callable[[str, str, int], Awaitable[float]]

# The table's contenders, one line each; the first of each is the baseline of its ratios.
PRODUCERS: dict[str, Produce] = {
    "raw aiokafka, same record": produce_raw,
    "raw aiokafka, no headers": produce_raw_plain,
    "streamlib": produce_streamlib,
    "faststream (no confirms)": produce_faststream,
}
CONSUMERS: dict[str, Consume] = {
    "raw aiokafka": consume_raw,
    "streamlib": consume_streamlib,
    "faststream": consume_faststream,
    "faststream batch=True": consume_faststream_batch,
}
DICT_CONSUMERS: dict[str, Consume] = {
    "raw aiokafka + orjson": consume_raw_dict,
    "streamlib": consume_streamlib_dict,
}
TRACED_CONSUMERS: dict[str, Consume] = {
    "streamlib": consume_streamlib,
    "streamlib + metrics": consume_streamlib_metrics,
    "streamlib traced": consume_streamlib_traced,
    "streamlib sampled 1%": consume_streamlib_sampled,
}


async def fill(bootstrap: str, count: int, traced: bool = False, partitions: int = 1) -> str:
    """A fresh topic holding ``count`` messages as streamlib (and Spring) write them; traced:
    each with the ``traceparent`` of its send span."""
    topic = await create_topic(bootstrap, partitions)
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


async def roundtrip_raw(bootstrap: str, samples: int) -> list[float]:
    """ms from send to received, one message at a time: aiokafka with its defaults but the
    same acks and idempotence as streamlib's, consumed with ``getone``."""
    topic = await create_topic(bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"rtr-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await producer.start()
    await consumer.start()
    try:
        to_json = Payload.__pydantic_serializer__.to_json
        out = []
        for n in range(samples + ROUNDTRIP_SKIP):
            start = time.perf_counter()
            future = await producer.send(topic, to_json(payload(n)), headers=HEADERS)
            record = await consumer.getone()
            Payload.model_validate_json(record.value)
            out.append((time.perf_counter() - start) * 1000)
            await future
        return out[ROUNDTRIP_SKIP:]
    finally:
        await consumer.stop()
        await producer.stop()


async def roundtrip_streamlib(bootstrap: str, samples: int) -> list[float]:
    """ms from ``send`` to the sink's call, one message at a time, every setting default."""
    topic = await create_topic(bootstrap)
    group = f"rts-{uuid.uuid4().hex[:8]}"
    config = {
        "binders": {"kafka": {"type": "kafka", "bootstrap-servers": bootstrap}},
        "bindings": {"take-in-0": {"destination": topic, "group": group}},
    }
    app = StreamApp("bench", config=config)
    received = asyncio.Event()

    @app.sink
    async def take(item: Payload) -> None:
        received.set()

    async with app.run():
        output = await app.output(topic)
        out = []
        for n in range(samples + ROUNDTRIP_SKIP):
            start = time.perf_counter()
            confirmation = await output.send(payload(n))
            await received.wait()
            out.append((time.perf_counter() - start) * 1000)
            received.clear()
            await confirmation
        return out[ROUNDTRIP_SKIP:]


ROUNDTRIP_SKIP = 20
"""Samples dropped at the start of a round trip run (group join, first fetch)."""
ROUNDTRIPS: dict[str, Callable[[str, int], Awaitable[list[float]]]] = {
    "raw aiokafka": roundtrip_raw,
    "streamlib": roundtrip_streamlib,
}


async def tracing_split(spans: int = 20_000) -> dict[str, float]:
    """Microseconds per message of a consumer's ``TracedDispatcher`` over the dispatcher it
    wraps, and of the OpenTelemetry SDK calls it makes (start_span and end with the same
    attributes, and making the span current), with every span sampled and with 1%."""

    async def bare(envelope: Envelope) -> Outcome:
        return ACK

    envelopes = [
        Envelope(b"{}", {"contentType": "application/json"}, None, "bench", 0, n)
        for n in range(spans)
    ]
    out: dict[str, float] = {}
    for label, ratio in (("", 1.0), (", sampled 1%", 0.01)):
        provider, _ = dropping_provider(ratio)
        traced = Tracing(provider).consumer(bare, "bench", "group", "kafka")  # type: ignore[arg-type]
        tracer = provider.get_tracer("bench")
        attributes = traced._attributes_of(envelopes[0])
        start = time.perf_counter()
        for envelope in envelopes:
            await bare(envelope)
        untraced = time.perf_counter() - start
        start = time.perf_counter()
        for envelope in envelopes:
            await traced(envelope)
        wrapped = time.perf_counter() - start - untraced
        start = time.perf_counter()
        for _ in envelopes:
            span = tracer.start_span("process bench", kind=SpanKind.CONSUMER, attributes=attributes)
            token = otel_context.attach(trace.set_span_in_context(span))
            otel_context.detach(token)
            span.end()
        sdk = time.perf_counter() - start
        provider.shutdown()
        out[f"streamlib's TracedDispatcher{label}"] = wrapped / spans * 1e6
        out[f"  of which SDK calls{label}"] = sdk / spans * 1e6
    return out


async def metrics_split(messages: int = 100_000) -> dict[str, float]:
    """Microseconds per message of the core's dispatch of a message to a handler that does
    nothing, with the app's metrics (counters and the handling time histogram) and without."""

    async def handler(item: bytes) -> None:
        return None

    envelope = Envelope(b"{}", {"contentType": "application/json"}, None, "bench", 0, 1)
    out: dict[str, float] = {}
    for label, metrics in (("without metrics", None), ("with metrics", BindingMetrics())):
        dispatch = HandlerDispatcher(
            "bench", handler, PayloadDecoder(bytes), False, RetryPolicy(), False, None, metrics
        )
        start = time.perf_counter()
        for _ in range(messages):
            await dispatch(envelope)
        out[f"dispatch {label}"] = (time.perf_counter() - start) / messages * 1e6
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--partitions", default="1,4", help="partition counts, comma-separated")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("STREAMLIB_TEST_KAFKA", "127.0.0.1:9092")
    )


def sections(args: argparse.Namespace) -> list[Section]:
    """Every Kafka row of the table."""
    bootstrap, count, warmup = args.bootstrap, args.messages, args.warmup
    partitions = [int(p) for p in args.partitions.split(",")]
    items = [payload(n) for n in range(count)]
    out: list[Section] = []

    def producing(produce: Produce) -> Run:
        return lambda topic, n: produce(bootstrap, topic, items[:n])

    def consuming(consume: Consume) -> Run:
        return lambda topic, n: consume(bootstrap, topic, n + 1)

    def filled(p: int) -> Callable[[], Awaitable[str]]:
        return lambda: fill(bootstrap, count + 1, partitions=p)

    def topic(p: int) -> Callable[[], Awaitable[str]]:
        return lambda: create_topic(bootstrap, p)

    for p in partitions:
        out.append(
            Section(
                f"Kafka send, {p} partition(s), pipelined, acks=all, idempotent",
                count,
                {name: producing(f) for name, f in PRODUCERS.items()},
                next(iter(PRODUCERS)),
                warmup,
                prepare=topic(p),
                fresh=True,
            )
        )
    groups = (("into a pydantic model", CONSUMERS), ("into dict", DICT_CONSUMERS))
    for p in partitions:
        for label, consumers in groups:
            out.append(
                Section(
                    f"Kafka consume {label}, {p} partition(s)",
                    count,
                    {name: consuming(f) for name, f in consumers.items()},
                    next(iter(consumers)),
                    warmup,
                    prepare=filled(p),
                )
            )
    out.append(
        Section(
            "Kafka consume, tracing (SDK, dropping exporter) and metrics on vs off",
            count,
            {name: consuming(f) for name, f in TRACED_CONSUMERS.items()},
            next(iter(TRACED_CONSUMERS)),
            warmup,
            prepare=filled(1),
        )
    )
    batch = "bench.kafka_batch"
    size = 500

    def batch_consuming(consume: Callable[..., Awaitable[float]]) -> Run:
        return lambda topic, n: consume(bootstrap, topic, n + 1, size)

    out.append(
        Section(
            f"Kafka batch consume into a pydantic model, 1 partition, batches of {size}",
            count,
            {
                name: batch_consuming(lazy(f"{batch}:{fn}"))
                for name, fn in (
                    ("raw getmany + validate", "consume_raw"),
                    ("streamlib list[T] sink", "consume_streamlib"),
                    ("FastStream batch=True", "consume_faststream"),
                )
            },
            "raw getmany + validate",
            warmup,
            prepare=filled(1),
        )
    )
    out.append(
        Section(
            "Kafka bulk send, 1 partition, acks=all, idempotent",
            count,
            {
                name: producing(lazy(f"{batch}:{fn}"))
                for name, fn in (
                    ("raw send per message", "produce_raw_send"),
                    ("streamlib send_many", "produce_streamlib_many"),
                    ("raw create_batch/send_batch", "produce_raw_batch"),
                )
            },
            "raw send per message",
            warmup,
            prepare=topic(1),
            fresh=True,
        )
    )
    samples = max(100, min(1000, count // 100))
    out.append(
        Section(
            "Kafka one-at-a-time round trip (send to handler), default settings",
            samples,
            {name: (lambda _, n, f=f: f(bootstrap, n)) for name, f in ROUNDTRIPS.items()},
            next(iter(ROUNDTRIPS)),
            latency=True,
        )
    )
    return out


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
            await TRACED_CONSUMERS[name](bootstrap, topic, warmup)
    rates: dict[str, list[float]] = {}
    for _ in range(rounds):
        for label, topic in topics.items():
            for name in TRACING:
                elapsed = await TRACED_CONSUMERS[name](bootstrap, topic, count + 1)
                rates.setdefault(f"consume {name}{label}", []).append(count / elapsed)
    return rates


def report_tracing(rates: dict[str, list[float]]) -> None:
    """Median and best of the rounds; the cost of each variant against tracing off."""
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, values in rates.items():
        print(f"{name:<44} median {medians[name]:>9,.0f} msgs/s   best {max(values):>9,.0f}")
    for label in ("", " (traceparent)"):
        off = medians.get(f"consume streamlib{label}")
        for variant in ("+ metrics", "traced", "sampled 1%"):
            on = medians.get(f"consume streamlib {variant}{label}")
            if off and on:
                print(f"cost on consume{label}, {variant}: {(1 - on / off) * 100:.1f}%")


def report_costs(table: list[Section]) -> None:
    """The tracing and metrics costs of the table's tracing row, and the SDK's own share."""
    section = next((s for s in table if s.title.startswith("Kafka consume, tracing")), None)
    if section is None or not section.results:
        return
    rates = {
        name: statistics.median(section.count / s for s, _ in runs)
        for name, runs in section.results.items()
    }
    off = rates.get("streamlib")
    if not off:
        return
    print("\nTracing and metrics cost on Kafka consume (same run, medians):")
    for name, rate in rates.items():
        if name != "streamlib":
            extra = 1e6 / rate - 1e6 / off
            print(f"  {name:<24} {(1 - rate / off) * 100:5.1f}%  (+{extra:.2f} us/msg)")
    print("Tracing and metrics per message, measured apart (the SDK with a batching processor):")
    for label, us in {**asyncio.run(tracing_split()), **asyncio.run(metrics_split())}.items():
        print(f"  {label:<44} {us:6.2f} us")


def main(argv: list[str]) -> int:
    parser = arguments("python -m bench kafka")
    add_arguments(parser)
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="only streamlib's consume: metrics and tracing off vs on, with and without "
        "trace context in the records",
    )
    args = parser.parse_args(argv)
    print(f"Kafka at {args.bootstrap}: {args.messages} messages of ~200 bytes")
    if args.profile:
        profiled(profile(args.bootstrap, args.messages, args.tracing), lambda _: None)
        return 0
    if args.tracing:
        report_tracing(
            asyncio.run(run_tracing(args.bootstrap, args.messages, args.warmup, args.rounds))
        )
        return 0
    table = sections(args)
    asyncio.run(run_rounds(table, args.rounds))
    report(table)
    report_costs(table)
    return 0


async def profile(bootstrap: str, count: int, traced: bool) -> None:
    """One send and one consume run of streamlib (traced: with the SDK), for cProfile."""
    items = [payload(n) for n in range(count)]
    topic = await fill(bootstrap, count + 1)
    provider = dropping_provider()[0] if traced else None
    elapsed = await streamlib_send(streamlib_config(bootstrap), topic, items, provider)
    print(f"send: {count / elapsed:,.0f} msgs/s")
    consume = consume_streamlib_traced if traced else consume_streamlib
    print(f"consume: {count / await consume(bootstrap, topic, count + 1):,.0f} msgs/s")
