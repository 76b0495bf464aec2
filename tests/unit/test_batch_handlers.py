"""Handlers that take a list, and bulk sends, in an app on the memory binder: detection,
start-up checks, outputs, test helpers, metrics and spans."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import BaseModel

from streamlib import BatchFailed, ConfigError, Message, StreamApp, StreamlibError
from streamlib._handlers import Kind, make_handler
from streamlib.asyncapi import asyncapi_document
from streamlib.memory import drop_memory_broker
from streamlib.testing import HandlerFailed, run_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Order(BaseModel):
    id: int


class Invoice(BaseModel):
    order: int


async def orders(items: list[Order]) -> None: ...
async def messages(items: list[Message[Order]]) -> None: ...
async def anything(items: list) -> None: ...
async def one(order: Order) -> None: ...
async def bill(items: list[Order]) -> list[Invoice | None]: ...
async def maybe(items: list[Order]) -> list[Message[Invoice]] | None: ...
async def array(msg: Message[list[int]]) -> None: ...


@pytest.mark.parametrize(
    ("fn", "payload_type", "wants_message", "batch"),
    [
        (orders, Order, False, True),
        (messages, Order, True, True),
        (anything, Any, False, True),
        (one, Order, False, False),
        (array, list[int], True, False),
    ],
)
def test_a_list_parameter_makes_a_batch_handler_of_its_item_type(
    fn: Any, payload_type: Any, wants_message: bool, batch: bool
) -> None:
    handler = make_handler(fn, Kind.SINK)
    assert (handler.payload_type, handler.wants_message, handler.batch) == (
        payload_type,
        wants_message,
        batch,
    )


@pytest.mark.parametrize("fn", [bill, maybe])
def test_a_batch_processor_results_are_checked_per_item(fn: Any) -> None:
    handler = make_handler(fn, Kind.PROCESSOR)
    assert handler.result_type in (Invoice, Invoice | None)
    assert handler.check_result is not None
    handler.check_result(Invoice(order=1))
    with pytest.raises(StreamlibError, match="not Invoice"):
        handler.check_result(Order(id=1))


@pytest.mark.parametrize("key", ["batch-size", "batch-wait-ms", "batch_size"])
async def test_batch_settings_on_a_one_message_handler_fail_at_start_naming_the_key(
    key: str,
) -> None:
    app = StreamApp("one", config={"bindings": {"one-in-0": {"consumer": {key: 10}}}})
    app.sink(one)
    with pytest.raises(ConfigError) as raised:
        async with run_app(app):
            pass
    canonical = key.replace("_", "-")
    assert raised.value.key == f"bindings.one-in-0.consumer.{canonical}"
    assert "sink one takes one message, not a list" in str(raised.value)


async def test_batch_settings_under_default_leave_one_message_handlers_alone() -> None:
    app = StreamApp("mixed", config={"default": {"consumer": {"batch-size": 2}}})
    got: list[list[int]] = []

    @app.sink
    async def single(order: Order) -> None: ...

    @app.sink
    async def many(items: list[Order]) -> None:
        got.append([o.id for o in items])

    async with run_app(app) as running:
        await running.app.send_many("many-in-0", [Order(id=n) for n in range(3)])
        await asyncio.sleep(0.05)
    assert [n for batch in got for n in batch] == [0, 1, 2]
    assert all(len(batch) <= 2 for batch in got)


async def test_a_bare_list_handler_gets_the_decoded_json_values() -> None:
    app = StreamApp("raw")
    got: list[Any] = []

    @app.sink
    async def raw(items: list) -> None:
        got.extend(items)

    async with run_app(app) as running:
        await running.app.send_many("raw-in-0", [{"id": 1}, {"id": 2}])
        await asyncio.sleep(0.05)
    assert got == [{"id": 1}, {"id": 2}]


async def test_batch_processor_outputs_go_to_its_output_and_to_a_message_destination() -> None:
    app = StreamApp("billing")

    @app.processor
    async def bill(items: list[Order]) -> list[Message[Invoice] | None]:
        return [
            None
            if o.id < 0
            else Message(Invoice(order=o.id), destination="big" if o.id > 9 else None)
            for o in items
        ]

    async with run_app(app, observe=["big"]) as running:
        await running.app.send_many("bill-in-0", [Order(id=n) for n in (1, -1, 20, 2)])
        assert [m.payload for m in await running.take("bill-out-0", 2, Invoice)] == [
            Invoice(order=1),
            Invoice(order=2),
        ]
        assert (await running.next("big", Invoice)).payload == Invoice(order=20)


async def test_a_batch_processor_that_returns_no_list_fails_naming_it() -> None:
    app = StreamApp("wrong")

    @app.processor
    async def wrong(items: list[Order]) -> Any:
        return Invoice(order=1)

    with pytest.raises(HandlerFailed, match="processor wrong takes a list and returned Invoice"):
        async with run_app(app) as running:
            await running.send("wrong-in-0", Order(id=1))
            await running.next("wrong-out-0")


async def test_run_app_reports_each_failed_record_of_a_batch() -> None:
    app = StreamApp(
        "partial",
        config={"bindings": {"take-in-0": {"consumer": {"max-attempts": 1, "dlq": True}}}},
    )

    @app.sink
    async def take(items: list[Order]) -> None:
        failures: dict[int, BaseException] = {
            i: ValueError(f"bad {o.id}") for i, o in enumerate(items) if o.id == 2
        }
        if failures:
            raise BatchFailed(failures)

    async with run_app(app, raise_handler_errors=False) as running:
        await running.app.send_many("take-in-0", [Order(id=n) for n in range(4)])
        [letter] = await running.dead_letters("take-in-0", 1, Order)
        assert letter.payload == Order(id=2)
        assert [(h, str(e)) for h, e in running.handler_errors] == [("take", "bad 2")]


async def test_send_many_before_the_app_runs_says_so() -> None:
    app = StreamApp("idle")
    with pytest.raises(StreamlibError, match=r"app.send_many\('orders'\) before the app runs"):
        await app.send_many("orders", [Order(id=1)])


async def test_output_send_many_gives_one_confirmation_that_can_be_awaited_twice() -> None:
    app = StreamApp("bulk")

    @app.sink
    async def take(order: Order) -> None: ...

    async with run_app(app, observe=["elsewhere"]) as running:
        sender = await app.output("elsewhere")
        confirm = await sender.send_many([Order(id=1), Order(id=2)], key="k")
        await confirm
        await confirm
        got = await running.take("elsewhere", 2, Order)
        assert [(m.payload.id, m.key) for m in got] == [(1, b"k"), (2, b"k")]


async def test_metrics_count_every_record_of_a_batch() -> None:
    consumer = {"back-off-initial-interval": 0.001}
    config = {"management": {"port": 0}, "bindings": {"take-in-0": {"consumer": consumer}}}
    app = StreamApp("counted", config=config)
    got: list[int] = []

    @app.sink
    async def take(items: list[Order]) -> None:
        got.extend(o.id for o in items)
        ids = [o.id for o in items]
        if 1 in ids:
            raise BatchFailed({ids.index(1): ValueError("one")})

    async with run_app(app, raise_handler_errors=False) as running:
        await running.app.send_many("take-in-0", [Order(id=n) for n in range(3)])
        for _ in range(100):
            if len(got) >= 5:  # the batch, then record 1 alone twice
                break
            await asyncio.sleep(0.01)
        assert app._metrics is not None
        metrics = app._metrics.binding("take-in-0")
        counts = (metrics.received, metrics.handled, metrics.failed, metrics.retried)
        assert counts == (3, 2, 1, 2)
        assert (metrics.in_flight, sum(metrics.duration_counts)) == (0, 3)
        assert app._metrics.destination("take-in-0").sent == 3  # the bulk send, per message


async def test_a_batch_is_one_process_span_linked_to_each_message_and_one_send_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = StreamApp(
        "traced",
        config={
            "bindings": {"take-in-0": {"destination": "orders", "consumer": {"batch-wait-ms": 50}}}
        },
        tracer_provider=provider,
    )
    got: list[int] = []

    @app.sink
    async def take(items: list[Order]) -> None:
        got.extend(o.id for o in items)

    async with run_app(app):
        await app.send_many("orders", [Order(id=n) for n in range(3)])
        for _ in range(100):
            if len(got) == 3:
                break
            await asyncio.sleep(0.01)
    spans = exporter.get_finished_spans()
    [send] = [s for s in spans if s.name == "send orders"]
    [process] = [s for s in spans if s.name == "process orders"]
    assert send.kind is SpanKind.PRODUCER
    assert send.attributes is not None and send.attributes["messaging.batch.message_count"] == 3
    assert process.kind is SpanKind.CONSUMER and process.parent is None
    assert process.attributes is not None
    assert process.attributes["messaging.batch.message_count"] == 3
    assert [link.context.span_id for link in process.links] == [send.context.span_id] * 3


def test_the_asyncapi_document_shows_the_item_type_of_a_list_handler() -> None:
    app = StreamApp("docs", config={"bindings": {"bill-in-0": {"destination": "orders"}}})
    app.processor(bill)
    document = asyncapi_document(app)
    messages = document["components"]["messages"]
    assert set(messages) == {"Order", "Invoice"}
    assert "list" in document["operations"]["bill-in-0"]["summary"]


def memory_app(
    name: str, namespace: str, binding: str, consumer: dict[str, Any], **top: Any
) -> StreamApp:
    bindings = {binding: {"destination": "orders", "group": "g", "consumer": consumer}}
    binders = {"m": {"type": "memory", "namespace": namespace}}
    return StreamApp(name, config={"binders": binders, "bindings": bindings, **top})


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> Any:
    name = f"batches-{request.node.name}"
    yield name
    drop_memory_broker(name)


async def test_a_stop_while_a_batch_waits_for_more_gives_its_messages_back(
    namespace: str,
) -> None:
    calls: list[list[int]] = []
    first = memory_app("first", namespace, "take-in-0", {"batch-wait-ms": 60_000})

    @first.sink
    async def take(items: list[Order]) -> None:
        calls.append([o.id for o in items])

    async with first.run():
        await first.send_many("orders", [Order(id=1), Order(id=2)])
        await asyncio.sleep(0.05)  # the worker holds the first and waits for more
    assert calls == []
    second = memory_app("second", namespace, "take-in-0", {"batch-size": 10})
    second.sink(take)
    async with second.run():
        for _ in range(100):
            if calls:
                break
            await asyncio.sleep(0.01)
    assert calls == [[1, 2]]


async def test_a_batch_interrupted_at_stop_is_redelivered_whole_and_in_order(
    namespace: str,
) -> None:
    calls: list[list[int]] = []
    stuck = asyncio.Event()
    first = memory_app("first", namespace, "hang-in-0", {}, **{"shutdown-timeout": 0.3})

    @first.sink
    async def hang(items: list[Order]) -> None:
        calls.append([o.id for o in items])
        stuck.set()
        await asyncio.sleep(60)

    async with first.run():
        await first.send_many("orders", [Order(id=n) for n in range(3)])
        await asyncio.wait_for(stuck.wait(), 5)
    second = memory_app("second", namespace, "take-in-0", {})

    @second.sink
    async def take(items: list[Order]) -> None:
        calls.append([o.id for o in items])

    async with second.run():
        for _ in range(100):
            if len(calls) > 1:
                break
            await asyncio.sleep(0.01)
    assert calls == [[0, 1, 2], [0, 1, 2]]
