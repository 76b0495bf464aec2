"""What the Kafka and RabbitMQ benchmarks share: payload, clock, streamlib runs, reporting."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from pydantic import BaseModel

from streamlib import StreamApp

R = TypeVar("R")


class Payload(BaseModel):
    """The ~200-byte JSON message every contender moves."""

    id: int
    customer: str
    amount: float
    currency: str
    note: str


Handler = Callable[[Payload], None]


def payload(n: int, amount: float | None = None) -> Payload:
    return Payload(
        id=n,
        customer=f"customer-{n % 1000:06d}",
        amount=n * 1.25 if amount is None else amount,
        currency="EUR",
        note="x" * 120,
    )


class Clock:
    """First and last handled message times; ``done`` once ``count`` were handled."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0
        self.first = 0.0
        self.last = 0.0
        self.done = asyncio.Event()

    def tick(self) -> None:
        self.seen += 1
        if self.seen == 1:
            self.first = time.perf_counter()
        if self.seen == self.count:
            self.last = time.perf_counter()
            self.done.set()

    def elapsed(self) -> float:
        return self.last - self.first


class DroppingExporter(SpanExporter):
    """Takes every span and keeps none: what tracing costs without an exporter's I/O."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def dropping_provider(ratio: float = 1.0) -> tuple[TracerProvider, DroppingExporter]:
    """An SDK tracer provider as production wires it (batching processor), exporting nowhere;
    below ``ratio`` 1, root spans are sampled at that ratio (children follow their parent)."""
    exporter = DroppingExporter()
    sampler = ParentBased(TraceIdRatioBased(ratio)) if ratio < 1 else None
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider, exporter


async def streamlib_send(
    config: dict[str, Any],
    destination: str,
    items: list[Payload],
    tracer_provider: TracerProvider | None = None,
) -> float:
    """Seconds to send ``items`` pipelined and then await every confirmation (one sent first)."""
    app = StreamApp("bench", config=config, tracer_provider=tracer_provider)
    async with app.run():
        output = await app.output(destination)
        await (await output.send(items[0]))
        start = time.perf_counter()
        send = output.send
        confirmations = [await send(item) for item in items]
        for confirmation in confirmations:
            await confirmation
        return time.perf_counter() - start


async def streamlib_receive(
    config: dict[str, Any],
    count: int,
    on: Handler | None = None,
    tracer_provider: TracerProvider | None = None,
    into: type = Payload,
) -> float:
    """Seconds from the first to the ``count``-th message handled by sink ``take-in-0``,
    whose payload type is ``into``.

    Without ``on`` the sink only ticks the clock, so no extra call is timed.
    """
    clock = Clock(count)
    app = StreamApp("bench", config=config, tracer_provider=tracer_provider)
    tick = clock.tick
    if on is None:

        async def take(item: Payload) -> None:
            tick()

    else:
        handle = on

        async def take(item: Payload) -> None:
            handle(item)
            tick()

    take.__annotations__["item"] = into
    app.sink(take)
    async with app.run():
        await clock.done.wait()
    return clock.elapsed()


class Broker(Protocol):
    """What the benchmarks use of a FastStream broker (imported lazily by each suite)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def faststream_receive(broker: Broker, clock: Clock) -> float:
    """Run ``broker`` until its subscriber has ticked ``clock`` to the end; the elapsed time."""
    await broker.start()
    try:
        await clock.done.wait()
    finally:
        await broker.stop()
    return clock.elapsed()


def print_ratios(values: Mapping[str, float], kinds: tuple[str, ...], raw: str) -> None:
    """``<kind> streamlib / <raw|faststream>`` ratios, where both values are there."""
    for kind in kinds:
        ours = values.get(f"{kind} streamlib")
        for other in (raw, "faststream"):
            theirs = values.get(f"{kind} {other}")
            if ours and theirs:
                print(f"{kind} streamlib / {other + ':':<13} {ours / theirs:.2f}x")


def arguments(prog: str) -> argparse.ArgumentParser:
    """The options both suites take; each adds its broker address and its own."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each contender")
    parser.add_argument("--profile", action="store_true", help="profile streamlib's runs")
    return parser


def profiled(work: Coroutine[Any, Any, R], report: Callable[[R], None]) -> None:
    """Run ``work`` under cProfile, report its result, then print the 30 costliest functions."""
    profiler = cProfile.Profile()
    profiler.enable()
    result = asyncio.run(work)
    profiler.disable()
    report(result)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
