"""OpenTelemetry traces across real brokers: one trace from a send through a processor to a
sink, a Zipkin B3 context from outside continued, a failed message's span marked as an error.

Spans are collected with the SDK's in-memory exporter from a provider given to the app, so
no other test runs traced.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel

from streamlib import Message, StreamApp
from streamlib.config import deep_merge
from streamlib.testing import BinderHarness
from streamlib.testing.collector import Collector

pytestmark = pytest.mark.anyio

SYSTEMS = {"kafka": "kafka", "rabbit": "rabbitmq"}
OFFSETS = {"kafka": "messaging.kafka.offset", "rabbit": "messaging.rabbitmq.message.delivery_tag"}


class Order(BaseModel):
    id: int


class Traced:
    """A tracer provider that keeps every finished span in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    async def spans(self, count: int, timeout: float) -> list[ReadableSpan]:
        """The finished spans once there are ``count`` (a sink's span ends after its ack)."""
        async with asyncio.timeout(timeout):
            while len(self.exporter.get_finished_spans()) < count:
                await asyncio.sleep(0.02)
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


def make_app(
    harness: BinderHarness, name: str, bindings: dict[str, Any], traced: Traced | None
) -> StreamApp:
    config = deep_merge(harness.binder_config(), {"name": name})
    config["bindings"] = bindings
    return StreamApp(name, config=config, tracer_provider=traced.provider if traced else None)


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    matching = [s for s in spans if s.name == name]
    assert len(matching) == 1, [s.name for s in spans]
    return matching[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_send_processor_and_sink_are_one_trace(
    broker_harness: BinderHarness, stack: AsyncExitStack
) -> None:
    harness = broker_harness
    orders, invoices = harness.unique("orders"), harness.unique("invoices")
    traced = Traced()
    got: Collector[int] = Collector()
    app = make_app(
        harness,
        "billing",
        {
            "bill-in-0": {"destination": orders, "group": "billing"},
            "bill-out-0": {"destination": invoices},
            "audit-in-0": {"destination": invoices, "group": "audit"},
        },
        traced,
    )

    @app.processor
    async def bill(order: Order) -> Order:
        return Order(id=order.id * 10)

    @app.sink
    async def audit(msg: Message[Order]) -> None:
        got.add(msg.payload.id)

    await stack.enter_async_context(app.run())
    tracer = traced.provider.get_tracer("checkout")
    with tracer.start_as_current_span("checkout"):
        await (await app.output(orders)).send(Order(id=7))
    assert await got.wait_for(1, harness.timeout) == [70]

    spans = await traced.spans(5, harness.timeout)
    checkout = only(spans, "checkout")
    send_orders = only(spans, f"send {orders}")
    process_orders = only(spans, f"process {orders}")
    send_invoices = only(spans, f"send {invoices}")
    process_invoices = only(spans, f"process {invoices}")
    assert {s.context.trace_id for s in spans} == {checkout.context.trace_id}
    assert parent_of(checkout) is None
    assert parent_of(send_orders) == checkout.context.span_id
    assert parent_of(process_orders) == send_orders.context.span_id
    assert parent_of(send_invoices) == process_orders.context.span_id, "output under handling"
    assert parent_of(process_invoices) == send_invoices.context.span_id
    assert process_orders.parent is not None and process_orders.parent.is_remote
    assert (send_orders.kind, process_orders.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)

    system = SYSTEMS[harness.name]
    assert dict(send_orders.attributes or {}) == {
        "messaging.system": system,
        "messaging.destination.name": orders,
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
    }
    attributes = dict(process_orders.attributes or {})
    offset = attributes.pop(OFFSETS[harness.name])
    assert isinstance(offset, int)
    expected: dict[str, Any] = {
        "messaging.system": system,
        "messaging.destination.name": orders,
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.consumer.group.name": "billing",
    }
    if harness.name == "kafka":
        expected["messaging.destination.partition.id"] = "0"
    else:
        assert attributes.pop("messaging.message.id")
    assert attributes == expected
    assert dict(process_invoices.attributes or {})["messaging.consumer.group.name"] == "audit"
    assert all(s.status.status_code is StatusCode.UNSET for s in spans)


async def test_b3_context_from_outside_is_continued(
    broker_harness: BinderHarness, stack: AsyncExitStack
) -> None:
    harness = broker_harness
    dest = harness.unique("zipkin")
    traced = Traced()
    got: Collector[dict[str, Any]] = Collector()
    app = make_app(harness, "audit", {"take-in-0": {"destination": dest, "group": "g"}}, traced)

    @app.sink
    async def take(msg: Message[Order]) -> None:
        got.add(dict(msg.headers))

    # An untraced sender: the message carries only the b3 header a Brave app writes.
    sender = make_app(harness, "brave", {}, None)
    await stack.enter_async_context(app.run())
    await stack.enter_async_context(sender.run())
    trace_id, span_id = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"
    await sender.send(dest, Order(id=1), headers={"b3": f"{trace_id}-{span_id}-1"})
    [headers] = await got.wait_for(1, harness.timeout)
    assert "traceparent" not in headers, "the untraced sender added no context"

    [span] = await traced.spans(1, harness.timeout)
    assert span.name == f"process {dest}"
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None and format(span.parent.span_id, "016x") == span_id


async def test_failed_message_span_is_an_error(
    broker_harness: BinderHarness, stack: AsyncExitStack
) -> None:
    harness = broker_harness
    dest = harness.unique("refused")
    traced = Traced()
    attempts: Collector[int] = Collector()
    consumer = {"max-attempts": 2, "back-off-initial-interval": 0.01, "dlq": True}
    app = make_app(
        harness,
        "strict",
        {"take-in-0": {"destination": dest, "group": "g", "consumer": consumer}},
        traced,
    )

    @app.sink
    async def take(order: Order) -> None:
        attempts.add(order.id)
        if order.id == 1:
            raise ValueError(f"order {order.id} refused")

    await stack.enter_async_context(app.run())
    await app.send(dest, Order(id=1))
    await app.send(dest, Order(id=2))
    assert await attempts.wait_for(3, harness.timeout) == [1, 1, 2]
    [letter] = await harness.dead_letters(dest, "g", 1)
    assert letter.body == b'{"id":1}'

    spans = await traced.spans(4, harness.timeout)
    refused, accepted = traced.named(f"process {dest}")
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.status.description == "ValueError: order 1 refused"
    assert dict(refused.attributes or {})["error.type"] == "builtins.ValueError"
    assert [e.name for e in refused.events] == ["exception"]
    assert accepted.status.status_code is StatusCode.UNSET
    assert "error.type" not in dict(accepted.attributes or {})
    sends = [s for s in spans if s.name == f"send {dest}"]
    assert [parent_of(s) for s in (refused, accepted)] == [s.context.span_id for s in sends]
