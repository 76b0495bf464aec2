"""A batch handler bound straight to the Kafka binder, for the batch tests.

``ScriptedBatches`` is a ``Dispatcher`` with ``batching`` set: it records every batch the
binder hands it (as ``(partition, offset, seq)`` triples, ``seq`` read from the JSON body)
and answers with the outcomes its ``script`` returns, the way the core's batch dispatch does
(a batch of one for a record the binder redelivers alone).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
    ConfigResource,
    ConfigResourceType,
)
from streamlib_kafka.binder import KafkaBinder

from streamlib.binder import (
    Batching,
    BinderContext,
    ConsumerProperties,
    ConsumerSpec,
    Envelope,
    Failure,
    Outcome,
)

Script = Callable[[Sequence[Envelope]], Awaitable[list[Outcome]]]


def seq_of(envelope: Envelope) -> int:
    seq: int = orjson.loads(envelope.body)["seq"]
    return seq


class ScriptedBatches:
    """A batch handler's dispatcher whose outcomes come from ``script``."""

    def __init__(self, size: int, wait: float, script: Script) -> None:
        self.batching = Batching(size, wait)
        self.batches: list[list[tuple[int, int, int]]] = []
        self._script = script

    async def dispatch_batch(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        self.batches.append([(e.partition or 0, e.offset or 0, seq_of(e)) for e in envelopes])
        return await self._script(envelopes)

    async def __call__(self, envelope: Envelope) -> Outcome:
        [outcome] = await self.dispatch_batch([envelope])
        return outcome

    def unreadable(self, exc: BaseException, where: str) -> Outcome:
        return Outcome(failure=Failure(exc, 1))

    @property
    def seqs(self) -> list[int]:
        """Every handled record's ``seq``, in the order handled."""
        return [seq for batch in self.batches for _, _, seq in batch]


def kafka_binder(bootstrap: str, **settings: Any) -> KafkaBinder:
    return KafkaBinder(
        {"bootstrap-servers": bootstrap, **settings}, BinderContext("batches", 0, 1, "kafka")
    )


def consumer_spec(destination: str, group: str, **consumer: Any) -> ConsumerSpec:
    props = ConsumerProperties.model_validate(consumer)
    return ConsumerSpec("handle-in-0", destination, group, props, 0, 1)


async def produce(
    bootstrap: str, topic: str, seqs: range, key: Callable[[int], bytes | None] | None = None
) -> None:
    """Send ``{"seq": n}`` for each of ``seqs`` (to partition 0 unless ``key`` is given),
    all confirmed before returning."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for seq in seqs:
            body = orjson.dumps({"seq": seq})
            if key is None:
                futures.append(await producer.send(topic, body, partition=0))
            else:
                futures.append(await producer.send(topic, body, key=key(seq)))
        for future in futures:
            await future
    finally:
        await producer.stop()


async def committed(bootstrap: str, group: str) -> dict[int, int]:
    """The offsets ``group`` committed, per partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


async def wait_committed(
    bootstrap: str, group: str, expected: dict[int, int], timeout: float
) -> None:
    """Wait until ``group`` committed ``expected`` (per partition); fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (seen := await committed(bootstrap, group)) != expected:
        assert loop.time() < deadline, f"committed {seen}, expected {expected}"
        await asyncio.sleep(0.1)


async def shrink_limit(bootstrap: str, topic: str, limit: int) -> None:
    """Lower ``topic``'s max.message.bytes after the binder read it at provisioning, so the
    broker (not the binder's own size check) refuses what is larger."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"max.message.bytes": str(limit)}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, config)])
    finally:
        await admin.close()
