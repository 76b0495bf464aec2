"""A memory binder that records what it opened and closed, for lifecycle tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Any, ClassVar

from streamlib.binder import BinderContext, ProducerSpec, register_binder
from streamlib.memory import MemoryBinder, MemoryProducer
from streamlib.messages import Envelope

TYPE = "tracking"


class TrackingProducer(MemoryProducer):
    """A memory producer whose confirmations resolve a little later, like a broker's."""

    def __init__(self, binder: TrackingBinder, spec: ProducerSpec) -> None:
        super().__init__(binder.broker, spec)
        self.destination = spec.destination
        self.binder = binder
        self.closed = False
        self.unconfirmed: set[asyncio.Future[None]] = set()
        self.sent_after_close = 0

    async def send(self, envelope: Envelope) -> Awaitable[None]:
        if self.closed:
            self.sent_after_close += 1
        await super().send(envelope)
        confirm = asyncio.get_running_loop().create_future()
        self.unconfirmed.add(confirm)
        asyncio.get_running_loop().call_later(0.01, self._confirm, confirm)
        return confirm

    def _confirm(self, confirm: asyncio.Future[None]) -> None:
        self.unconfirmed.discard(confirm)
        if not confirm.done():
            confirm.set_result(None)

    async def aclose(self) -> None:
        await asyncio.gather(*self.unconfirmed)
        self.closed = True


class TrackingBinder(MemoryBinder):
    instances: ClassVar[list[TrackingBinder]] = []

    def __init__(self, settings: Mapping[str, Any], context: BinderContext) -> None:
        super().__init__(settings, context)
        self.producers: list[TrackingProducer] = []
        self.most_open: dict[str, int] = {}
        self.closed = False
        TrackingBinder.instances.append(self)

    async def bind_producer(self, spec: ProducerSpec) -> TrackingProducer:
        producer = TrackingProducer(self, spec)
        self.producers.append(producer)
        open_now = len(self.open_producers())
        self.most_open["all"] = max(self.most_open.get("all", 0), open_now)
        return producer

    def open_producers(self) -> list[TrackingProducer]:
        return [p for p in self.producers if not p.closed]

    async def aclose(self) -> None:
        await super().aclose()
        self.closed = True


register_binder(TYPE, TrackingBinder)
