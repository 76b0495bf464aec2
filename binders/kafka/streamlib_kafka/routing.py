"""Queueing a record on the shared producer without aiokafka's per-record set-up.

``AIOKafkaProducer.send`` looks up the topic's metadata, builds two partition sets, runs its
size check (which ``limits`` already ran) and makes a ``TopicPartition`` for every record. A
``Router`` does that work once per topic and metadata version, picks the partition with the
producer's own partitioner, and appends the record to the producer's accumulator as ``send``
does; a topic without metadata yet, or a producer that lacks the internals relied on, goes
through ``send``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition  # type: ignore[import-untyped]

from .limits import Headers

_INTERNALS = ("_message_accumulator", "_partitioner", "_request_timeout_ms", "_txn_manager")


class _Route:
    """One topic's partitions as of one metadata version."""

    __slots__ = ("available", "metadata", "partitions", "tps")

    def __init__(self, topic: str, metadata: dict[int, Any]) -> None:
        self.metadata = metadata
        self.partitions = sorted(metadata)
        self.available = [p for p, m in metadata.items() if m.leader != -1]
        self.tps = {p: TopicPartition(topic, p) for p in self.partitions}


class Router:
    """Queues records on one (non-transactional) aiokafka producer; ``on_delivery`` is the
    done callback its records' futures get."""

    def __init__(self, producer: Any, on_delivery: Callable[[asyncio.Future[Any]], None]) -> None:
        self.producer = producer
        self.on_delivery = on_delivery
        self.usable = (
            all(hasattr(producer, name) for name in _INTERNALS)
            and isinstance(getattr(producer.client.cluster, "_partitions", None), dict)
            and (producer._txn_manager is None or producer._txn_manager.transactional_id is None)
        )
        if self.usable:
            self._cluster = producer.client.cluster
            self._accumulator = producer._message_accumulator
            self._partitioner = producer._partitioner
            self._timeout = producer._request_timeout_ms / 1000
        self._routes: dict[str, _Route] = {}

    async def send(
        self,
        topic: str,
        body: bytes,
        key: bytes | None,
        partition: int | None,
        headers: Headers,
    ) -> asyncio.Future[Any]:
        """The record's delivery future, as ``AIOKafkaProducer.send`` returns it; raises what
        it raises (AssertionError for a partition the topic does not have)."""
        metadata = self._cluster._partitions.get(topic) if self.usable else None
        if not metadata:
            future: asyncio.Future[Any] = await self.producer.send(
                topic, body, key, partition, None, headers
            )
            return future
        route = self._routes.get(topic)
        if route is None or route.metadata is not metadata:
            route = self._routes[topic] = _Route(topic, metadata)
        if partition is None:
            partition = self._partitioner(key, route.partitions, route.available)
        elif partition not in route.tps:
            raise AssertionError("Unrecognized partition")
        future = await self._accumulator.add_message(
            route.tps[partition], key, body, self._timeout, timestamp_ms=None, headers=headers
        )
        return future
