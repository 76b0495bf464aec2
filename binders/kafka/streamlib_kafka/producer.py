"""Producing: the binder's shared aiokafka producer and the bound ``Producer`` per binding.

Sends are pipelined: ``send`` returns as soon as aiokafka queued the record, with a
``Confirmation`` wrapping aiokafka's delivery future; awaiting it maps delivery errors.
While a transactional consumer handles a message, sends made by its processor go into that
consumer's transaction (see ``transactions``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from streamlib.messages import Envelope

from .errors import KafkaError, mapped, start_client, to_streamlib
from .headers import encode_headers
from .transactions import current_transaction


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
    """One aiokafka producer per binder, started on first use and shared by its bindings."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self._kwargs = kwargs
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def get(self) -> Any:
        if self._producer is None:
            async with self._lock:
                if self._producer is None:
                    producer = AIOKafkaProducer(**self._kwargs)
                    await start_client(producer, "connecting the producer")
                    self._producer = producer
        return self._producer

    @property
    def started(self) -> Any:
        """The producer if it was started, else None."""
        return self._producer

    async def flush(self) -> None:
        if self._producer is not None:
            with mapped("flushing the producer"):
                await self._producer.flush()

    async def aclose(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with mapped("closing the producer"):
                await producer.stop()


async def send_record(
    producer: Any,
    topic: str,
    body: bytes,
    key: bytes | None,
    partition: int | None,
    headers: list[tuple[str, bytes]],
) -> Confirmation:
    """Queue one record on ``producer``; PublishError when aiokafka refuses it."""
    try:
        future = await producer.send(topic, body, key, partition, None, headers)
    except KafkaError as exc:
        raise to_streamlib(exc, f"publishing to {topic!r}", publish=True) from exc
    return Confirmation(future, topic)


class KafkaProducer:
    """The bound producer of one output binding: every message goes to one topic."""

    def __init__(self, client: ProducerClient, producer: Any, topic: str) -> None:
        self._client = client
        self._producer = producer
        self._topic = topic

    async def send(self, envelope: Envelope) -> Confirmation:
        """Queue the message; partition from the core when set, else Kafka's partitioner."""
        transaction = current_transaction.get()
        producer = (
            self._producer
            if transaction is None or transaction.owner is not self._client
            else transaction.producer
        )
        key = envelope.key
        if type(key) is str:
            key = key.encode()
        partition = envelope.partition
        try:
            future = await producer.send(
                self._topic,
                envelope.body,
                key,
                partition,
                None,
                encode_headers(envelope.headers, partition),
            )
        except KafkaError as exc:
            raise to_streamlib(exc, f"publishing to {self._topic!r}", publish=True) from exc
        return Confirmation(future, self._topic)

    async def aclose(self) -> None:
        await self._client.flush()
