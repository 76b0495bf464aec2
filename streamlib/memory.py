"""The in-memory binder: real streamlib semantics inside one process, for tests and demos.

Its topology mirrors a broker's: a destination routes to queues, one per consumer group
(``<destination>.<group>``, durable for the life of the process), one per partition of a
partitioned group (``<destination>.<group>-<n>``) and one per anonymous consumer. Members of
a group compete for its queue; a message is removed only after its handler finished, and a
message whose handler was interrupted goes back to the head of its queue. Dead letters are
published to ``error.<destination>.<group>`` (Kafka's naming) and kept for inspection.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict

from .binder import (
    DONE,
    PARTITION,
    BaseBinder,
    BaseBinding,
    Batching,
    BinderContext,
    ConsumerSpec,
    Dispatcher,
    Envelope,
    Outcome,
    ProducerSpec,
    validate,
)

log = logging.getLogger("streamlib.memory")


class MemoryBinderSettings(BaseModel):
    """``binders.<name>`` settings of a ``type: memory`` binder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = "default"
    """Binders with the same namespace in one process share destinations."""


class _NoKeys(BaseModel):
    """The memory binder has no consumer or producer keys of its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Queue:
    def __init__(self, name: str, partition: int | None, exclusive: bool) -> None:
        self.name = name
        self.partition = partition
        self.exclusive = exclusive
        self.items: deque[Envelope] = deque()
        self._ready = asyncio.Event()

    def put(self, envelope: Envelope) -> None:
        self.items.append(envelope)
        self._ready.set()

    def requeue(self, envelope: Envelope) -> None:
        self.items.appendleft(envelope)
        self._ready.set()

    async def get(self) -> Envelope:
        while not self.items:
            self._ready.clear()
            await self._ready.wait()
        return self.items.popleft()

    async def get_batch(self, batching: Batching) -> list[Envelope]:
        """Up to ``batching.size`` envelopes: the first to arrive, then whatever arrives
        within ``batching.wait`` seconds after it."""
        batch = [await self.get()]
        deadline = asyncio.get_running_loop().time() + batching.wait
        try:
            while len(batch) < batching.size:
                if self.items:
                    batch.append(self.items.popleft())
                    continue
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        batch.append(await self.get())
                except TimeoutError:
                    break
        except BaseException:
            self.requeue_all(batch)  # cancelled while waiting for more: nothing is lost
            raise
        return batch

    def requeue_all(self, envelopes: Sequence[Envelope]) -> None:
        """Put ``envelopes`` back at the head of the queue, in their order."""
        for envelope in reversed(envelopes):
            self.requeue(envelope)


@dataclass
class MemoryBroker:
    """Destinations and queues of one namespace."""

    routes: dict[str, list[_Queue]] = field(default_factory=dict)
    queues: dict[str, _Queue] = field(default_factory=dict)
    dead_letters: dict[str, list[Envelope]] = field(default_factory=dict)

    def declare(
        self, destination: str, name: str, partition: int | None, exclusive: bool
    ) -> _Queue:
        queue = self.queues.get(name)
        if queue is None:
            queue = _Queue(name, partition, exclusive)
            self.queues[name] = queue
            self.routes.setdefault(destination, []).append(queue)
        return queue

    def delete(self, destination: str, queue: _Queue) -> None:
        self.queues.pop(queue.name, None)
        bound = self.routes.get(destination, [])
        if queue in bound:
            bound.remove(queue)

    def publish(self, destination: str, envelope: Envelope) -> None:
        for queue in self.routes.get(destination, ()):
            if queue.partition is None or queue.partition == envelope.partition:
                queue.put(
                    replace(envelope, destination=destination, headers=dict(envelope.headers))
                )


_brokers: dict[str, MemoryBroker] = {}


def memory_broker(namespace: str = "default") -> MemoryBroker:
    """The process-wide broker of ``namespace`` (created on first use)."""
    broker = _brokers.get(namespace)
    if broker is None:
        broker = _brokers[namespace] = MemoryBroker()
    return broker


def queue_names(spec: ConsumerSpec) -> list[tuple[str, int | None]]:
    """Queue names (and partitions) a consumer reads, in the RabbitMQ binder's naming."""
    dest, group = spec.destination, spec.group
    if group is None:
        return [(f"{dest}.anonymous.{uuid.uuid4().hex[:22]}", None)]
    if spec.properties.partitioned:
        return [(f"{dest}.{group}-{p}", p) for p in spec.partitions]
    return [(f"{dest}.{group}", None)]


class MemoryBinding(BaseBinding):
    """A consumer on one or more memory queues with ``concurrency`` workers per queue."""

    def __init__(self, broker: MemoryBroker, spec: ConsumerSpec, dispatch: Dispatcher) -> None:
        self._broker = broker
        super().__init__(spec)
        self._dispatch = dispatch
        self._queues = [
            broker.declare(spec.destination, name, partition, exclusive=spec.group is None)
            for name, partition in queue_names(spec)
        ]
        self._running = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def is_running(self) -> bool:
        return bool(self._tasks) and not self._stopping and not any(t.done() for t in self._tasks)

    async def start(self) -> None:
        if self._tasks:
            return
        self._stopping = False
        self._running.set()
        workers = self.spec.properties.concurrency
        batching = self._dispatch.batching
        self._tasks = [
            asyncio.create_task(
                self._work(queue, batching),
                name=f"{self.name}:{queue.name}:{i}",
            )
            for queue in self._queues
            for i in range(workers)
        ]

    async def _work(self, queue: _Queue, batching: Batching | None) -> None:
        """Take the next envelope (or batch, for a handler that takes a list), dispatch it
        and settle each outcome in order; what an interruption leaves unsettled goes back
        to the head of the queue."""
        while True:
            await self._running.wait()
            batch = [await queue.get()] if batching is None else await queue.get_batch(batching)
            if self._stopping or not self._running.is_set():
                queue.requeue_all(batch)
                if self._stopping:
                    return
                continue
            self._busy += 1
            self._idle.clear()
            done = 0
            try:
                if batching is None:
                    outcomes = [await self._dispatch(batch[0])]
                else:
                    outcomes = await self._dispatch.dispatch_batch(batch)
                for envelope, outcome in zip(batch, outcomes, strict=True):
                    await self._settle(envelope, outcome)
                    done += 1
            except BaseException as exc:
                queue.requeue_all(batch[done:])  # interrupted: redeliver, at-least-once
                if not isinstance(exc, asyncio.CancelledError):
                    log.critical(
                        "binding %s: worker on %s died; the binding is down",
                        self.name,
                        queue.name,
                        exc_info=exc,
                    )
                raise
            finally:
                self._busy -= 1
                if self._busy == 0:
                    self._idle.set()

    async def _settle(self, envelope: Envelope, outcome: Outcome) -> None:
        """Act on ``envelope``'s outcome: wait for its pending output, dead-letter a failure."""
        if outcome.pending is not None:
            await outcome.pending
        if outcome.failure is not None:
            group = self.spec.group or "anonymous"
            dlq = f"error.{self.spec.destination}.{group}"
            headers = dict(envelope.headers)
            headers.update(outcome.failure.dead_letter_headers())
            headers["x-original-topic"] = self.spec.destination
            if envelope.partition is not None:
                headers["x-original-partition"] = envelope.partition
            dead = replace(envelope, headers=headers, destination=dlq)
            self._broker.dead_letters.setdefault(dlq, []).append(dead)
            self._broker.publish(dlq, dead)

    async def stop(self) -> None:
        """Stop taking messages, let in-flight handlers finish, then end the workers.

        Cancelled while handlers run, it interrupts them; their messages are redelivered.
        """
        if not self._tasks:
            return
        self._stopping = True
        try:
            await self._idle.wait()
        finally:
            # Also when the wait is cancelled (a stop past its timeout): interrupted handlers
            # put their message back, so nothing is lost.
            tasks, self._tasks = self._tasks, []
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def pause(self) -> None:
        self._running.clear()

    async def resume(self) -> None:
        self._running.set()

    async def unbind(self) -> None:
        await self.stop()
        for queue in self._queues:
            if queue.exclusive:
                self._broker.delete(self.spec.destination, queue)


class MemoryProducer:
    def __init__(self, broker: MemoryBroker, spec: ProducerSpec) -> None:
        self._broker = broker
        self._destination = spec.destination
        for group in spec.properties.required_groups:
            if spec.properties.partition_count > 1:
                for p in range(spec.properties.partition_count):
                    broker.declare(spec.destination, f"{spec.destination}.{group}-{p}", p, False)
            else:
                broker.declare(spec.destination, f"{spec.destination}.{group}", None, False)

    async def send(self, envelope: Envelope) -> Awaitable[None]:
        if envelope.partition is not None:
            headers = {PARTITION: envelope.partition}
            headers.update(envelope.headers)
            envelope = replace(envelope, headers=headers)
        self._broker.publish(self._destination, envelope)
        return DONE

    async def send_many(self, envelopes: Sequence[Envelope]) -> Awaitable[None]:
        for envelope in envelopes:
            await self.send(envelope)
        return DONE

    async def aclose(self) -> None:
        return None


class MemoryBinder(BaseBinder):
    """Binder ``type: memory``; the default when no binder is configured."""

    def __init__(self, settings: Mapping[str, Any], context: BinderContext) -> None:
        parsed = validate(MemoryBinderSettings, dict(settings), f"binders.{context.binder_name}")
        self.broker = memory_broker(parsed.namespace)
        self._bindings: list[MemoryBinding] = []

    async def bind_consumer(self, spec: ConsumerSpec, dispatch: Dispatcher) -> MemoryBinding:
        validate(_NoKeys, spec.properties.extension, f"bindings.{spec.binding_name}.consumer")
        binding = MemoryBinding(self.broker, spec, dispatch)
        self._bindings.append(binding)
        if spec.properties.auto_startup:
            await binding.start()
        return binding

    async def bind_producer(self, spec: ProducerSpec) -> MemoryProducer:
        validate(_NoKeys, spec.properties.extension, f"bindings.{spec.binding_name}.producer")
        return MemoryProducer(self.broker, spec)

    def health(self) -> Mapping[str, Any]:
        return {"status": "up", "bindings": [b.name for b in self._bindings if b.is_running]}

    async def aclose(self) -> None:
        for binding in self._bindings:
            await binding.unbind()
        self._bindings.clear()


def drop_memory_broker(namespace: str) -> None:
    """Forget the broker of ``namespace`` and every message it holds."""
    _brokers.pop(namespace, None)
