"""Producing: the binder's shared aiokafka producer and the bound ``Producer`` per binding.

Sends are pipelined: ``send`` returns as soon as aiokafka queued the record, with a
``Confirmation`` wrapping aiokafka's delivery future; awaiting it maps delivery errors.
While a transactional consumer handles a message, sends made by its processor go into that
consumer's transaction (see ``transactions``).

A record that cannot fit its topic fails before it is queued (see ``limits``). When the
broker refuses a record of the shared idempotent producer anyway, the producer's sequence for
that partition has a gap and every later record there would fail, so the producer is
replaced: the next send starts a new one (with a log line saying why), after a back-off
that grows while replacements follow each other.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Generator, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from streamlib.binder import Envelope, PublishError

from .bulk import send_many as send_batches
from .errors import PRODUCER_FATAL, KafkaError, describe, mapped, start_client, to_streamlib
from .headers import encode_headers
from .limits import Headers, RecordLimits
from .routing import Router
from .transactions import current_transaction

log = logging.getLogger("streamlib.kafka")

REPLACE_BACKOFF_INITIAL = 0.5
REPLACE_BACKOFF_MAX = 30.0
REPLACE_QUIET = 60.0
"""Seconds without a replacement after which the back-off starts again from zero."""


class Confirmation:
    """The broker's acknowledgement of one record; awaiting raises PublishError on failure."""

    __slots__ = ("future", "topic")

    def __init__(self, future: asyncio.Future[Any], topic: str) -> None:
        self.future = future
        self.topic = topic

    def done(self) -> bool:
        return self.future.done()

    def error(self) -> BaseException | None:
        """The mapped error of a completed send, or None when it succeeded."""
        if self.future.cancelled():
            return to_streamlib(asyncio.CancelledError(), f"publishing to {self.topic!r}")
        exc = self.future.exception()
        if exc is None:
            return None
        return to_streamlib(exc, f"publishing to {self.topic!r}", publish=True)

    def __await__(self) -> Generator[Any, None, None]:
        try:
            yield from self.future
        except KafkaError as exc:
            raise to_streamlib(exc, f"publishing to {self.topic!r}", publish=True) from exc


class ProducerClient:
    """One aiokafka producer per binder, started on first use and shared by its bindings;
    replaced when the broker left it unable to send (see the module docstring)."""

    def __init__(self, kwargs: dict[str, Any], limits: RecordLimits) -> None:
        self._kwargs = kwargs
        self.limits = limits
        self._idempotent = bool(kwargs.get("enable_idempotence"))
        self.batch_size: int = kwargs.get("max_batch_size", 16384)
        self._producer: Any = None
        self._router: Router | None = None
        self._broken: str | None = None
        self._lock = asyncio.Lock()
        self._replaced_at = -REPLACE_QUIET
        self._backoff = 0.0
        self._retiring: set[asyncio.Task[None]] = set()

    async def get(self) -> Any:
        """The producer to send with, started (or replaced) first if needed."""
        if self._producer is None or self._broken is not None:
            async with self._lock:
                if self._producer is None:
                    self._producer = await self._start()
                elif self._broken is not None:
                    await self._replace()
        return self._producer

    @property
    def ready(self) -> Any:
        """The producer if it can send now (started, not to be replaced), else None."""
        return self._producer if self._broken is None else None

    @property
    def started(self) -> Any:
        """The producer if it was started, else None."""
        return self._producer

    def failed(self, producer: Any, exc: BaseException) -> None:
        """A record sent by ``producer`` failed with ``exc``; mark it for replacement when
        that left it unable to send."""
        if producer is not self._producer or self._broken is not None:
            return
        # An idempotent producer numbers each partition's records; a batch the broker
        # refused for good leaves a gap that fails every later record of the partition.
        if isinstance(exc, PRODUCER_FATAL) or (
            self._idempotent
            and isinstance(exc, KafkaError)
            and not getattr(exc, "retriable", False)
        ):
            self._broken = describe(exc)

    async def _start(self) -> Any:
        producer = AIOKafkaProducer(**self._kwargs)
        await start_client(producer, "connecting the producer")
        self._router = Router(producer, functools.partial(self._delivered, producer))
        return producer

    async def _replace(self) -> None:
        now = time.monotonic()
        if now - self._replaced_at > REPLACE_QUIET:
            self._backoff = 0.0
        log.warning(
            "replacing the Kafka producer in %.3gs: the broker refused a record (%s), so "
            "later records of that partition would fail",
            self._backoff,
            self._broken,
        )
        await asyncio.sleep(self._backoff)
        self._backoff = min(max(self._backoff * 2, REPLACE_BACKOFF_INITIAL), REPLACE_BACKOFF_MAX)
        new = await self._start()
        old, self._producer, self._broken = self._producer, new, None
        self._replaced_at = time.monotonic()
        # The old producer still delivers what it queued (to other partitions) as it stops.
        task = asyncio.get_running_loop().create_task(self._stop(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _stop(producer: Any) -> None:
        try:
            await producer.stop()
        except Exception as exc:
            log.warning("closing a replaced Kafka producer failed: %s", describe(exc))

    async def send(
        self,
        producer: Any,
        topic: str,
        body: bytes,
        key: bytes | None,
        partition: int | None,
        headers: Headers,
    ) -> Confirmation:
        """Queue one record on ``producer`` (this client's or a transaction's).

        Raises a non-retriable PublishError when the record cannot fit ``topic``, and the
        mapped PublishError when aiokafka refuses to queue it.
        """
        self.limits.check(topic, key, body, headers)
        router = self._router
        ours = producer is self._producer and router is not None and router.producer is producer
        try:
            if ours and router is not None:
                future = await router.send(topic, body, key, partition, headers)
            else:
                future = await producer.send(topic, body, key, partition, None, headers)
        except KafkaError as exc:
            # Refused before it was queued (a full buffer, no metadata): no sequence gap.
            if isinstance(exc, PRODUCER_FATAL):
                self.failed(producer, exc)
            raise to_streamlib(exc, f"publishing to {topic!r}", publish=True) from exc
        except AssertionError:
            # aiokafka asserts that an explicit partition is in the topic's metadata; it is
            # not when the topic was deleted and re-created (by auto-creation) with fewer.
            known = producer.client.cluster.partitions_for_topic(topic) or ()
            raise PublishError(
                f"publishing to {topic!r}: partition {partition} does not exist, the topic "
                f"has {len(known)} partition(s); check its producer.partition-count",
                retriable=False,
            ) from None
        if ours and router is not None:
            future.add_done_callback(router.on_delivery)
        return Confirmation(future, topic)

    def _delivered(self, producer: Any, future: asyncio.Future[Any]) -> None:
        exc = None if future.cancelled() else future.exception()
        if exc is not None:
            self.failed(producer, exc)

    async def flush(self) -> None:
        if self._producer is not None:
            with mapped("flushing the producer"):
                await self._producer.flush()

    async def aclose(self) -> None:
        if self._retiring:
            await asyncio.gather(*self._retiring)
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with mapped("closing the producer"):
                await producer.stop()


class KafkaProducer:
    """The bound producer of one output binding: every message goes to one topic.

    It asks its client for the producer on every send, so a replaced producer is never used.
    """

    def __init__(self, client: ProducerClient, topic: str) -> None:
        self._client = client
        self._topic = topic

    async def send(self, envelope: Envelope) -> Confirmation:
        """Queue the message; partition from the core when set, else Kafka's partitioner."""
        client = self._client
        transaction = current_transaction.get()
        if transaction is not None and transaction.owner is client:
            producer = transaction.producer
        else:
            producer = client.ready or await client.get()
        key = envelope.key
        if isinstance(key, str):
            key = key.encode()
        partition = envelope.partition
        return await client.send(
            producer,
            self._topic,
            envelope.body,
            key,
            partition,
            encode_headers(envelope.headers, partition),
        )

    async def send_many(self, envelopes: Sequence[Envelope]) -> Confirmation:
        """Queue all of ``envelopes`` in record batches per partition (see ``bulk``), in
        the current transaction if there is one; one confirmation for all of them."""
        client = self._client
        transaction = current_transaction.get()
        if transaction is None or transaction.owner is not client:
            producer = await client.get()
        else:
            producer = transaction.producer
        future = await send_batches(client, producer, self._topic, envelopes)
        return Confirmation(future, self._topic)

    async def aclose(self) -> None:
        await self._client.flush()
