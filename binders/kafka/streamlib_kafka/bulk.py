"""Bulk sends: many records to one topic as aiokafka record batches, one confirmation for all.

Records are grouped by partition: the envelope's partition when the core set one, else the
partition aiokafka's default partitioner picks for the key (murmur2 of the key bytes over the
topic's partitions, as the Java client does). Records without a key share one partition per
call, the one the partitioner picks for the first of them: aiokafka picks a random available
partition per keyless record, so one choice per call keeps them together in big batches.

Each partition's records fill ``create_batch()`` builders in order, a new one whenever
``append`` says the builder is full (``producer.batch-size``, or the topic's
``max.message.bytes`` when that is smaller); the builders go to ``send_batch`` in turns across
partitions, so every partition's first batch is queued before any partition's second. Batches
carry the producer's id and sequence numbers (idempotence) and join the open transaction of a
transactional producer, exactly as records of ``send`` do.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiokafka.partitioner import DefaultPartitioner  # type: ignore[import-untyped]

from streamlib.binder import Envelope, PublishError

from .errors import PRODUCER_FATAL, KafkaError, describe, to_streamlib
from .headers import encode_headers
from .limits import Headers, record_size

if TYPE_CHECKING:
    from .producer import ProducerClient

_partitioner = DefaultPartitioner()

Record = tuple[bytes | None, bytes, Headers]


async def send_many(
    client: ProducerClient, producer: Any, topic: str, envelopes: Sequence[Envelope]
) -> asyncio.Future[None]:
    """Queue every one of ``envelopes`` on ``producer`` in record batches per partition.

    Nothing is queued when a record cannot fit ``topic`` or names a partition the topic does
    not have (PublishError, not retriable). Returns one future that is done once every batch
    was acknowledged, failed with the first refusal: a PublishError naming the topic and the
    partition.
    """
    records: list[tuple[int | None, Record]] = []
    check = client.limits.check
    for envelope in envelopes:
        key = envelope.key
        if isinstance(key, str):
            key = key.encode()
        partition = envelope.partition
        headers = encode_headers(envelope.headers, partition)
        check(topic, key, envelope.body, headers)
        records.append((partition, (key, envelope.body, headers)))
    groups = await _by_partition(producer, topic, records)
    limit, _ = client.limits.limit(topic)
    batches = [_batches(producer, rs, limit, client.batch_size) for rs in groups.values()]
    futures: list[tuple[int, asyncio.Future[Any]]] = []
    try:
        for turn in range(max(map(len, batches), default=0)):
            for partition, built in zip(groups, batches, strict=True):
                if turn < len(built):
                    future = await producer.send_batch(built[turn], topic, partition=partition)
                    futures.append((partition, future))
    except KafkaError as exc:
        # Refused before it was queued (a full buffer, no metadata): no sequence gap.
        if isinstance(exc, PRODUCER_FATAL):
            client.failed(producer, exc)
        for _, future in futures:
            future.add_done_callback(_retrieve)
        raise to_streamlib(exc, f"publishing to {topic!r}", publish=True) from exc
    return _all_of(client, producer, topic, futures)


async def _by_partition(
    producer: Any, topic: str, records: list[tuple[int | None, Record]]
) -> dict[int, list[Record]]:
    """``records`` grouped by the partition each goes to, each group in the given order."""
    try:
        known = await producer.partitions_for(topic)
    except KafkaError as exc:
        raise to_streamlib(exc, f"publishing to {topic!r}", publish=True) from exc
    every = sorted(known)
    available = list(producer.client.cluster.available_partitions_for_topic(topic) or ())
    keyless: int | None = None
    groups: dict[int, list[Record]] = {}
    for partition, record in records:
        if partition is None:
            key = record[0]
            if key is not None:
                partition = _partitioner(key, every, available)
            else:
                if keyless is None:
                    keyless = _partitioner(None, every, available)
                partition = keyless
        elif partition not in known:
            raise PublishError(
                f"publishing to {topic!r}: partition {partition} does not exist, the topic "
                f"has {len(known)} partition(s); check its producer.partition-count",
                retriable=False,
            )
        group = groups.get(partition)
        if group is None:
            group = groups[partition] = []
        group.append(record)
    return groups


def _batches(producer: Any, records: list[Record], limit: int, batch_size: int) -> list[Any]:
    """``records`` in as few batches as ``batch_size`` and the topic's ``limit`` allow."""
    batch = producer.create_batch()
    built = [batch]
    # The topic's limit counts only when it is below the builder's own size bound.
    small = limit < batch_size
    for key, value, headers in records:
        if (
            small
            and batch.record_count()
            and batch.size() + record_size(key, value, headers) > limit
        ):
            batch.close()
            batch = producer.create_batch()
            built.append(batch)
        if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
            # Full; an empty builder always takes its first record.
            batch = producer.create_batch()
            built.append(batch)
            batch.append(timestamp=None, key=key, value=value, headers=headers)
    for batch in built:
        batch.close()
    return built


def _all_of(
    client: ProducerClient,
    producer: Any,
    topic: str,
    futures: list[tuple[int, asyncio.Future[Any]]],
) -> asyncio.Future[None]:
    """A future done once all of ``futures`` are: None, or the first refusal as a
    PublishError naming the topic and partition."""
    loop = asyncio.get_running_loop()
    combined: asyncio.Future[None] = loop.create_future()
    remaining = len(futures)
    if not remaining:
        combined.set_result(None)
        return combined

    def done(partition: int, future: asyncio.Future[Any]) -> None:
        nonlocal remaining
        remaining -= 1
        exc = asyncio.CancelledError() if future.cancelled() else future.exception()
        if exc is not None:
            client.failed(producer, exc)
            if not combined.done():
                combined.set_exception(
                    PublishError(
                        f"publishing to {topic!r} partition {partition}: {describe(exc)}",
                        retriable=bool(getattr(exc, "retriable", False))
                        or isinstance(exc, PRODUCER_FATAL),
                    )
                )
        elif not remaining and not combined.done():
            combined.set_result(None)

    for partition, future in futures:
        future.add_done_callback(functools.partial(done, partition))
    return combined


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
