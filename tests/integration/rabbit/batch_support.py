"""A stand-in batch dispatcher for the rabbit binder's batch tests, and binder shortcuts.

``ScriptedBatches`` answers as the core's batch dispatcher does (one Outcome per envelope, in
order; outputs of a call sent as one bulk send whose confirmation all its records share) from
a script: which seqs fail, whether there is an output, whether a call blocks. It records every
call, so a test asserts message by message what the binder handed over.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from typing import Any

from streamlib_rabbit import RabbitBinder
from streamlib_rabbit.producer import RabbitProducer

from streamlib.binder import (
    ACK,
    CONTENT_TYPE,
    Batching,
    BinderContext,
    ConsumerProperties,
    ConsumerSpec,
    Envelope,
    Failure,
    Outcome,
    ProducerProperties,
    ProducerSpec,
    validate,
)


def seq_of(envelope: Envelope) -> int:
    seq = json.loads(envelope.body)["seq"]
    assert isinstance(seq, int)
    return seq


def item(seq: int) -> Envelope:
    return Envelope(json.dumps({"seq": seq}).encode(), {CONTENT_TYPE: "application/json"})


class ScriptedBatches:
    """A ``Dispatcher`` with ``batching`` set: seqs in ``fail`` fail for good (``Failure``);
    with ``output``, every other record is sent there (one ``send_many`` per call). While
    ``gate`` is set and not open, calls wait for it (a batch in hand)."""

    def __init__(
        self,
        size: int,
        wait: float = 0.0,
        *,
        fail: Iterable[int] = (),
        output: RabbitProducer | None = None,
        gate: asyncio.Event | None = None,
    ) -> None:
        self.batching = Batching(size, wait)
        self.fail = set(fail)
        self.output = output
        self.gate = gate
        self.batches: list[list[int]] = []
        """The seqs of each ``dispatch_batch`` call, in call order."""
        self.singles: list[int] = []
        """The seqs handed over one at a time (``__call__``)."""
        self.unread: list[str] = []
        self.changed = asyncio.Event()

    @property
    def handled(self) -> list[int]:
        return [seq for batch in self.batches for seq in batch] + self.singles

    async def dispatch_batch(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        seqs = [seq_of(e) for e in envelopes]
        self.batches.append(seqs)
        self.changed.set()
        if self.gate is not None:
            await self.gate.wait()
        outcomes = [self._failure(seq) if seq in self.fail else ACK for seq in seqs]
        if self.output is None:
            return outcomes
        sent = [item(seq) for seq in seqs if seq not in self.fail]
        pending = await self.output.send_many(sent)
        return [o if o.failure is not None else Outcome(pending=pending) for o in outcomes]

    async def __call__(self, envelope: Envelope) -> Outcome:
        seq = seq_of(envelope)
        self.singles.append(seq)
        self.changed.set()
        if seq in self.fail:
            return self._failure(seq)
        if self.output is None:
            return ACK
        return Outcome(pending=await self.output.send(item(seq)))

    def unreadable(self, exc: BaseException, where: str) -> Outcome:
        self.unread.append(where)
        self.changed.set()
        return Outcome(failure=Failure(exc, 1))

    def _failure(self, seq: int) -> Outcome:
        return Outcome(failure=Failure(ValueError(f"seq {seq} is bad"), 1))

    async def wait_for(self, condition: Any, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


def binder(url: str, name: str, **settings: Any) -> RabbitBinder:
    return RabbitBinder({"url": url, **settings}, BinderContext(name, 0, 1, "rabbit"))


def consumer_spec(name: str, destination: str, **consumer: Any) -> ConsumerSpec:
    """A group ``g`` consumer of ``destination``; ``consumer``: its settings (kebab-case)."""
    key = f"bindings.{name}.consumer"
    properties = validate(ConsumerProperties, consumer, key)
    return ConsumerSpec(name, destination, "g", properties, 0, 1)


def producer_spec(
    name: str, destination: str, groups: Sequence[str] = ("r",), **producer: Any
) -> ProducerSpec:
    """A producer of ``destination`` that declares the queues ``<destination>.<group>``."""
    key = f"bindings.{name}.producer"
    properties = validate(ProducerProperties, {"required-groups": list(groups), **producer}, key)
    return ProducerSpec(name, destination, properties)
