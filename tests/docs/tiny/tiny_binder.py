"""Binder ``type: tiny``: an in-process broker in a few lines, for docs/writing-a-binder.md."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from typing import Any

from streamlib.binder import (
    DONE,
    PARTITION,
    BaseBinder,
    BaseBinding,
    BinderContext,
    ConsumerSpec,
    Dispatcher,
    Envelope,
    Outcome,
    ProducerSpec,
)

Queue = asyncio.Queue[Envelope]


class TinyBroker:
    """Destinations route to queues; a queue keeps its messages until a consumer takes them."""

    def __init__(self) -> None:
        self.routes: dict[str, dict[str, tuple[int | None, Queue]]] = {}
        self.dead_letters: dict[str, list[Envelope]] = {}

    def queue(self, destination: str, name: str, partition: int | None = None) -> Queue:
        bound = self.routes.setdefault(destination, {})
        if name not in bound:
            bound[name] = (partition, asyncio.Queue())
        return bound[name][1]

    def publish(self, destination: str, envelope: Envelope) -> None:
        for partition, queue in self.routes.get(destination, {}).values():
            if partition is None or partition == envelope.partition:
                queue.put_nowait(replace(envelope, destination=destination))


BROKER = TinyBroker()


class TinyBinding(BaseBinding):
    """One worker per queue; ``pause``, ``resume`` and ``unbind`` come from BaseBinding."""

    def __init__(self, spec: ConsumerSpec, dispatch: Dispatcher, queues: list[Queue]) -> None:
        super().__init__(spec)
        self._dispatch = dispatch
        self._queues = queues
        self._workers: list[asyncio.Task[None]] = []
        self._waiting: set[asyncio.Task[None]] = set()

    @property
    def is_running(self) -> bool:
        return bool(self._workers)

    async def start(self) -> None:
        if not self._workers:
            self._workers = [asyncio.create_task(self._work(q)) for q in self._queues]

    async def stop(self) -> None:
        workers, self._workers = self._workers, []
        for task in workers:
            if task in self._waiting:
                task.cancel()  # idle: nothing taken, nothing lost
        await asyncio.gather(*workers, return_exceptions=True)

    async def _work(self, queue: Queue) -> None:
        me = asyncio.current_task()
        assert me is not None
        while me in self._workers:
            self._waiting.add(me)
            try:
                envelope = await queue.get()
            finally:
                self._waiting.discard(me)
            batching = self._dispatch.batching  # set when the handler takes a list
            if batching is None:
                await self._settle(envelope, await self._dispatch(envelope))
                continue
            batch = [envelope]  # with what has arrived already (batching.wait is ignored)
            while len(batch) < batching.size and not queue.empty():
                batch.append(queue.get_nowait())
            outcomes = await self._dispatch.dispatch_batch(batch)
            for envelope, outcome in zip(batch, outcomes, strict=True):
                await self._settle(envelope, outcome)  # in order, as one at a time

    async def _settle(self, envelope: Envelope, outcome: Outcome) -> None:
        if outcome.pending is not None:
            await outcome.pending  # output confirmed before the input counts as done
        if outcome.failure is not None:
            group = self.spec.group or "anonymous"
            headers = {**envelope.headers, **outcome.failure.dead_letter_headers()}
            dead = replace(envelope, headers=headers)
            BROKER.dead_letters.setdefault(f"{self.spec.destination}.{group}", []).append(dead)


class TinyProducer:
    def __init__(self, spec: ProducerSpec) -> None:
        self._destination = spec.destination
        for group in spec.properties.required_groups:  # keep messages for groups not yet there
            count = spec.properties.partition_count
            for partition in range(count) if count > 1 else [None]:
                suffix = "" if partition is None else f"-{partition}"
                BROKER.queue(spec.destination, f"{group}{suffix}", partition)

    async def send(self, envelope: Envelope) -> Awaitable[None]:
        if envelope.partition is not None:
            headers = {PARTITION: envelope.partition, **envelope.headers}
            envelope = replace(envelope, headers=headers)
        BROKER.publish(self._destination, envelope)
        return DONE  # in-process delivery is its own confirmation

    async def aclose(self) -> None:
        return None


class TinyBinder(BaseBinder):
    def __init__(self, settings: Mapping[str, Any], context: BinderContext) -> None:
        self._bindings: list[TinyBinding] = []

    async def bind_consumer(self, spec: ConsumerSpec, dispatch: Dispatcher) -> TinyBinding:
        dest, group = spec.destination, spec.group
        if group is None:
            queues = [BROKER.queue(dest, f"anonymous.{uuid.uuid4().hex}")]
        elif spec.properties.partitioned:
            queues = [BROKER.queue(dest, f"{group}-{p}", p) for p in spec.partitions]
        else:
            queues = [BROKER.queue(dest, group)]
        binding = TinyBinding(spec, dispatch, queues * spec.properties.concurrency)
        self._bindings.append(binding)
        if spec.properties.auto_startup:
            await binding.start()
        return binding

    async def bind_producer(self, spec: ProducerSpec) -> TinyProducer:
        return TinyProducer(spec)

    async def aclose(self) -> None:
        for binding in self._bindings:
            await binding.unbind()
