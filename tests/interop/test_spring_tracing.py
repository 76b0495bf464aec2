"""A Spring Cloud Stream producer with Micrometer Tracing -> a streamlib processor -> a Spring
consumer: each message keeps one trace id end to end.

The Java app traces with Brave (W3C propagation, Spring Boot's default; or B3, as older
Brave setups send it), the streamlib processor with the OpenTelemetry SDK. The streamlib
spans continue the context Spring wrote, and the Spring consumer handles each message in
the trace the Spring producer started.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from interop_support import Broker, Order, Spring, WireTap, kafka_broker
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamlib import StreamApp

pytestmark = [pytest.mark.interop, pytest.mark.anyio, pytest.mark.kafka]

COUNT = 3


@pytest.fixture
def broker(kafka_bootstrap: str) -> Broker:
    """Kafka only: Spring Cloud Stream's Kafka binder has a switch for observed sends and
    receives (``enable-observation``)."""
    return kafka_broker(kafka_bootstrap)


def relay_app(broker: Broker, src: str, out: str, provider: TracerProvider) -> StreamApp:
    config = broker.streamlib_config(
        "py-relay",
        {
            "relay-in-0": {"destination": src, "group": "relay"},
            "relay-out-0": {"destination": out, "producer": {"required-groups": ["jc"]}},
        },
    )
    app = StreamApp("py-relay", config=config, tracer_provider=provider)

    @app.processor
    async def relay(order: Order) -> Order:
        return Order(key=order.key, seq=order.seq, note="relayed")

    return app


def text(value: bytes | None) -> str:
    assert value is not None
    return value.decode()


@pytest.mark.parametrize("propagation", ["W3C", "B3"])
async def test_spring_trace_continues_through_streamlib_to_spring(
    broker: Broker,
    spring: Spring,
    unique: Callable[[str], str],
    tmp_path: Path,
    propagation: str,
) -> None:
    src, out = unique("interop-trace-in"), unique("interop-trace-out")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("a\nb\nc\n", encoding="utf-8")
    tracing = {
        "spring.autoconfigure.exclude": "",
        "management.tracing.propagation.produce": propagation,
        "spring.cloud.stream.kafka.binder.enable-observation": "true",
    }
    async with relay_app(broker, src, out, provider).run():
        consumer = spring.start(
            "consumer",
            {
                "spring.cloud.stream.bindings.sink-in-0.destination": out,
                "spring.cloud.stream.bindings.sink-in-0.group": "jc",
                **tracing,
            },
        )
        producer = spring.start(
            "producer",
            {
                "spring.cloud.stream.bindings.out-0.destination": src,
                "spring.cloud.stream.kafka.bindings.out-0.producer.sync": "true",
                "interop.keys-file": keys_file,
                "interop.count": COUNT,
                **tracing,
            },
        )
        assert await producer.wait_exit() == 0, producer.log_tail()
        records = await consumer.wait_for(
            lambda rs: sum(r["event"] == "received" for r in rs) >= COUNT,
            f"{COUNT} relayed records at the Java consumer",
        )

    # What the Spring producer started: one trace per message, its context in the headers.
    sent = await WireTap(broker, src).read(COUNT)
    started: dict[int, tuple[str, str]] = {}
    for record in sent:
        headers = {name: text(value) for name, value in record.headers}
        seq = Order.model_validate_json(record.value).seq
        if propagation == "W3C":
            _, trace_id, span_id, _ = headers["traceparent"].split("-")
        else:
            assert "traceparent" not in headers, headers
            trace_id, span_id, *_ = headers["b3"].split("-")
        started[seq] = (trace_id, span_id)
    assert len({trace_id for trace_id, _ in started.values()}) == COUNT

    spans = exporter.get_finished_spans()
    processed = {s.context.span_id: s for s in spans if s.name == f"process {src}"}
    sends = [s for s in spans if s.name == f"send {out}"]
    assert len(processed) == len(sends) == COUNT
    continued = {
        (format(s.context.trace_id, "032x"), format(s.parent.span_id, "016x"))
        for s in processed.values()
        if s.parent is not None
    }
    assert continued == set(started.values()), "streamlib continues the Spring producer's span"
    for send in sends:
        assert send.parent is not None and send.parent.span_id in processed

    received = [r for r in records if r["event"] == "received"]
    assert sorted(r["seq"] for r in received) == list(range(COUNT))
    send_ids = {(s.context.trace_id, s.context.span_id) for s in sends}
    for record in received:
        assert record["note"] == "relayed"
        trace_id, _ = started[record["seq"]]
        assert record["traceId"] == trace_id, "the Spring consumer handles it in the same trace"
        _, header_trace, header_span, _ = record["headers"]["traceparent"].split("-")
        assert header_trace == trace_id
        assert (int(header_trace, 16), int(header_span, 16)) in send_ids, "child of streamlib"
