"""Bulk sends: many records to one topic as aiokafka record batches, one confirmation for all.

Records are grouped by partition: the envelope's partition when the core set one, else the
partition aiokafka's default partitioner picks for the key (murmur2 of the key bytes over the
topic's partitions, as the Java client does). Records without a key share one partition per
call, the one the partitioner picks for the first of them: aiokafka picks a random available
partition per keyless record, so one choice per call keeps them together in big batches.

Each partition's records fill ``create_batch()`` builders in order, a new one whenever
``append`` says the builder is full (``producer.batch-size``, or the topic's
``max.message.bytes`` when that is smaller); the builders go to ``send_batch`` in turns across
partitions, so every partition's first batch is queued before any partition's second, and a
partition's next batch is built while its previous one is in flight. Batches
carry the producer's id and sequence numbers (idempotence) and join the open transaction of a
transactional producer, exactly as records of ``send`` do.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator, Sequence
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

# Bounds of what a one-record batch adds to its key, value and headers: the batch header and
# the record's varints (``DefaultRecordBatchBuilder.estimate_size_in_bytes``).
_SLACK = 128
_PER_HEADER = 10


async def send_many(
    client: ProducerClient, producer: Any, topic: str, envelopes: Sequence[Envelope]
) -> asyncio.Future[None]:
    """Queue every one of ``envelopes`` on ``producer`` in record batches per partition.

    Nothing is queued when a record cannot fit ``topic`` or names a partition the topic does
    not have (PublishError, not retriable). When aiokafka refuses to queue a batch (a full
    buffer, no metadata) the mapped PublishError is raised; batches queued before it may still
    be delivered. Returns one future that is done once every batch was acknowledged, failed
    with the first refusal: a PublishError naming the topic and the partition.
    """
    groups = await _by_partition(client, producer, topic, envelopes)
    limit, _ = client.limits.limit(topic)
    # Each partition's next batch is built while its previous one is in flight.
    building = [
        (partition, _batches(producer, rs, limit, client.batch_size))
        for partition, rs in groups.items()
    ]
    futures: list[tuple[int, asyncio.Future[Any]]] = []
    try:
        while building:
            unfinished = []
            for partition, batches in building:
                batch = next(batches, None)
                if batch is not None:
                    future = await producer.send_batch(batch, topic, partition=partition)
                    futures.append((partition, future))
                    unfinished.append((partition, batches))
            building = unfinished
    except KafkaError as exc:
        # Refused before it was queued (a full buffer, no metadata): no sequence gap.
        if isinstance(exc, PRODUCER_FATAL):
            client.failed(producer, exc)
        for _, future in futures:
            future.add_done_callback(_retrieve)
        raise to_streamlib(exc, f"publishing to {topic!r}", publish=True) from exc
    return _all_of(client, producer, topic, futures)


async def _by_partition(
    client: ProducerClient, producer: Any, topic: str, envelopes: Sequence[Envelope]
) -> dict[int, list[Record]]:
    """The records of ``envelopes`` grouped by the partition each goes to, each group in the
    given order; every record checked against what ``topic`` refuses (``limits``)."""
    try:
        known = await producer.partitions_for(topic)
    except KafkaError as exc:
        raise to_streamlib(exc, f"publishing to {topic!r}", publish=True) from exc
    every = sorted(known)
    available = list(producer.client.cluster.available_partitions_for_topic(topic) or ())
    limits = client.limits
    limit, _ = limits.limit(topic)
    # Records far below the limit skip the exact size check: its estimate costs more than
    # the rest of a record's preparation.
    roomy = limit - _SLACK
    exact = topic in limits.compacted
    keyless: int | None = None
    chosen: dict[bytes, int] = {}
    groups: dict[int, list[Record]] = {}
    group: list[Record] = []
    last_target: int | None = None
    last_source: Any = None
    last_partition: int | None = None
    headers: Headers | None = None
    header_bytes = 0
    check = limits.check
    for envelope in envelopes:
        key = envelope.key
        body = envelope.body
        partition = envelope.partition
        source = envelope.headers
        # A bulk's messages mostly carry equal headers: encoded once.
        if source != last_source or partition != last_partition or headers is None:
            headers = encode_headers(source, partition)
            header_bytes = sum(len(n) + len(v) + _PER_HEADER for n, v in headers)
            last_source, last_partition = source, partition
        if key is None:
            if exact or len(body) + header_bytes > roomy:
                check(topic, key, body, headers)
            if partition is None:
                # The usual bulk: keyless records to the partition chosen once per call.
                if keyless is None:
                    keyless = _partitioner(None, every, available)
                if keyless != last_target:
                    found = groups.get(keyless)
                    group = groups[keyless] = [] if found is None else found
                    last_target = keyless
                group.append((None, body, headers))
                continue
        else:
            if isinstance(key, str):
                key = key.encode()
            if exact or len(body) + len(key) + header_bytes > roomy:
                check(topic, key, body, headers)
        if partition is None and key is not None:  # keyless ones were grouped above
            target = chosen.get(key, -1)
            if target < 0:
                target = chosen[key] = _partitioner(key, every, available)
        elif partition is not None and partition in known:
            target = partition
        else:
            raise PublishError(
                f"publishing to {topic!r}: partition {partition} does not exist, the topic "
                f"has {len(known)} partition(s); check its producer.partition-count",
                retriable=False,
            )
        if target != last_target:
            found = groups.get(target)
            group = groups[target] = [] if found is None else found
            last_target = target
        group.append((key, body, headers))
    return groups


def _batches(producer: Any, records: list[Record], limit: int, batch_size: int) -> Iterator[Any]:
    """``records`` in as few closed batches as ``batch_size`` and the topic's ``limit``
    allow, each yielded once full."""
    batch = producer.create_batch()
    # The topic's limit counts only when it is below the builder's own size bound.
    small = limit < batch_size
    for key, value, headers in records:
        if (
            small
            and batch.record_count()
            and batch.size() + record_size(key, value, headers) > limit
        ):
            batch.close()
            yield batch
            batch = producer.create_batch()
        if batch.append(timestamp=None, key=key, value=value, headers=headers) is None:
            # Full (append closed it); an empty builder always takes its first record.
            yield batch
            batch = producer.create_batch()
            batch.append(timestamp=None, key=key, value=value, headers=headers)
    batch.close()
    yield batch


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
