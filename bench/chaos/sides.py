"""Broker-specific parts of the chaos run: topology, the producer, the output reader, the
processor's configuration, and what is left in the broker at the end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aio_pika
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

from .checker import Arrival
from .workload import Workload

BATCH = 2000


@dataclass(frozen=True, slots=True)
class Leftovers:
    """What the broker still holds after the processors stopped."""

    dead_letters: list[int]
    remaining: list[int]
    stuck: list[str]


class Side(Protocol):
    """One broker as the driver sees it."""

    name: str
    upstream: tuple[str, int]
    direct_address: str

    async def setup(self) -> None: ...

    def processor_spec(self, proxy_address: str) -> dict[str, Any]: ...

    async def ready(self) -> bool: ...

    async def produce(self, progress: Callable[[int], None]) -> None: ...

    async def read_outputs(self, into: list[Arrival]) -> None: ...

    async def settled(self) -> tuple[bool, str]: ...

    async def leftovers(self) -> Leftovers: ...


def consumer_settings() -> dict[str, Any]:
    """Retry quickly: a refused output is tried 3 times, then dead-lettered."""
    return {
        "dlq": True,
        "max-attempts": 3,
        "back-off-initial-interval": 0.1,
        "back-off-max-interval": 0.5,
    }


def _arrival(raw: bytes) -> Arrival:
    data = json.loads(raw)
    return Arrival(int(data["seq"]), str(data["key"]), str(data["id"]), time.monotonic())


def _seq(raw: bytes) -> int:
    return int(json.loads(raw)["seq"])


class KafkaSide:
    """Kafka: outputs larger than the output topic's ``max.message.bytes`` are refused."""

    name = "kafka"
    partitions = 6
    max_message_bytes = 32768
    pad_bytes = 40000

    def __init__(self, workload: Workload, bootstrap: str, proxied_target: str) -> None:
        self.workload = workload
        self.bootstrap = bootstrap
        self.direct_address = bootstrap
        host, _, port = proxied_target.rpartition(":")
        self.upstream = (host, int(port))
        self.dlq = f"error.{workload.input}.{workload.group}"

    async def setup(self) -> None:

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(self.workload.input, self.partitions, 1),
                    NewTopic(
                        self.workload.output,
                        self.partitions,
                        1,
                        topic_configs={"max.message.bytes": str(self.max_message_bytes)},
                    ),
                ]
            )
        finally:
            await admin.close()

    def processor_spec(self, proxy_address: str) -> dict[str, Any]:
        return {
            "pad_bytes": self.pad_bytes,
            "streamlib": {
                "binders": {
                    "kafka": {
                        "type": "kafka",
                        "bootstrap-servers": proxy_address,
                        # Batches must stay below the output topic's max.message.bytes, so
                        # only the oversized outputs are refused.
                        "producer": {"batch-size": 16384},
                        "consumer": {"session-timeout-ms": 6000, "heartbeat-interval-ms": 1000},
                    }
                },
                "bindings": {
                    "relay-in-0": {
                        "destination": self.workload.input,
                        "group": self.workload.group,
                        "consumer": {**consumer_settings(), "concurrency": 2},
                    },
                    "relay-out-0": {"destination": self.workload.output},
                },
            },
        }

    async def ready(self) -> bool:
        return True

    async def produce(self, progress: Callable[[int], None]) -> None:

        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, enable_idempotence=True, linger_ms=20
        )
        await producer.start()
        try:
            w = self.workload
            for start in range(0, w.messages, BATCH):
                futures = []
                for seq in range(start, min(start + BATCH, w.messages)):
                    key = w.key(seq)
                    value = json.dumps({"seq": seq, "key": key}).encode()
                    futures.append(await producer.send(w.input, value, key=key.encode()))
                await asyncio.gather(*futures)
                progress(min(start + BATCH, w.messages))
        finally:
            await producer.stop()

    async def read_outputs(self, into: list[Arrival]) -> None:

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.workload.output, p) for p in range(self.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                for records in batches.values():
                    for record in records:
                        assert record.value is not None
                        into.append(_arrival(record.value))
        finally:
            await consumer.stop()

    async def _committed_and_ends(self) -> tuple[dict[int, int], dict[int, int]]:

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        await admin.start()
        await consumer.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.workload.group)
            tps = [TopicPartition(self.workload.input, p) for p in range(self.partitions)]
            ends = await consumer.end_offsets(tps)
            committed = {tp.partition: offsets[tp].offset if tp in offsets else 0 for tp in tps}
            return committed, {tp.partition: off for tp, off in ends.items()}
        finally:
            await consumer.stop()
            await admin.close()

    async def settled(self) -> tuple[bool, str]:
        committed, ends = await self._committed_and_ends()
        behind = {p: ends[p] - committed[p] for p in ends if committed[p] < ends[p]}
        return not behind, f"uncommitted per partition {behind}" if behind else "all committed"

    async def _partitions(self, topic: str) -> list[int]:
        """The partitions of ``topic``, none when it does not exist."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            (found,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        if found.get("error_code"):
            return []
        return sorted(int(part["partition"]) for part in found.get("partitions", []))

    async def _read(self, topic: str, starts: dict[int, int] | None = None) -> list[int]:
        """The sequence numbers in ``topic``: of the partitions in ``starts`` from the offset
        given there, or of every partition from the beginning; up to each partition's end."""
        if starts is None:
            starts = dict.fromkeys(await self._partitions(topic), 0)
        if not starts:
            return []
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in starts]
            ends = await consumer.end_offsets(tps)
            todo = {tp for tp in tps if ends[tp] > starts[tp.partition]}
            if not todo:
                return []
            consumer.assign(list(todo))
            for tp in todo:
                consumer.seek(tp, starts[tp.partition])
            seqs: list[int] = []
            deadline = time.monotonic() + 120
            while todo and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, records in batches.items():
                    seqs += [_seq(r.value) for r in records if r.offset < ends[tp]]
                    if records and records[-1].offset + 1 >= ends[tp]:
                        todo.discard(tp)
            if todo:
                raise RuntimeError(f"could not read {topic} to its end within 120 s")
            return seqs
        finally:
            await consumer.stop()

    async def leftovers(self) -> Leftovers:
        committed, ends = await self._committed_and_ends()
        stuck = [
            f"{self.workload.input}[{p}] committed {committed[p]} of {ends[p]}"
            for p in sorted(ends)
            if committed[p] < ends[p]
        ]
        starts = {p: committed[p] for p in ends if committed[p] < ends[p]}
        remaining = await self._read(self.workload.input, starts)
        return Leftovers(await self._read(self.dlq), remaining, stuck)


class RabbitSide:
    """RabbitMQ: outputs for the refused exchange land on a full ``reject-publish`` queue, so
    the broker nacks them."""

    name = "rabbit"

    def __init__(self, workload: Workload, url: str, tool: str) -> None:
        from urllib.parse import urlsplit

        self.workload = workload
        self.url = url
        self.tool = tool
        parts = urlsplit(url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 5672)
        self.direct_address = f"{self.upstream[0]}:{self.upstream[1]}"
        self.queue = f"{workload.input}.{workload.group}"
        self.dlq = f"{self.queue}.dlq"
        self.check_queue = f"{workload.output}.check"

    async def _connect(self) -> aio_pika.abc.AbstractRobustConnection:

        return await aio_pika.connect_robust(self.url, reconnect_interval=0.5)

    async def setup(self) -> None:

        connection = await self._connect()
        async with connection:
            channel = await connection.channel()
            for name in (self.workload.input, self.workload.output, self.workload.refused):
                await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
            check = await channel.declare_queue(self.check_queue, durable=True)
            await check.bind(self.workload.output, "#")
            full = await channel.declare_queue(
                f"{self.workload.refused}.full",
                durable=True,
                arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
            )
            await full.bind(self.workload.refused, "#")

    def processor_spec(self, proxy_address: str) -> dict[str, Any]:
        return {
            "refused_destination": self.workload.refused,
            "streamlib": {
                "binders": {
                    "rabbit": {
                        "type": "rabbit",
                        "url": f"amqp://guest:guest@{proxy_address}/",
                        "reconnect-interval": 0.5,
                    }
                },
                "bindings": {
                    "relay-in-0": {
                        "destination": self.workload.input,
                        "group": self.workload.group,
                        "consumer": {**consumer_settings(), "prefetch": 100},
                    },
                    "relay-out-0": {"destination": self.workload.output},
                },
            },
        }

    async def ready(self) -> bool:
        """True once a processor declared the group queue, so produced messages are kept."""

        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel()
            try:
                await channel.declare_queue(self.queue, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return False
            return True

    async def produce(self, progress: Callable[[int], None]) -> None:

        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(self.workload.input)
            w = self.workload
            for start in range(0, w.messages, BATCH):
                sends = []
                for seq in range(start, min(start + BATCH, w.messages)):
                    key = w.key(seq)
                    body = json.dumps({"seq": seq, "key": key}).encode()
                    message = aio_pika.Message(
                        body,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    )
                    sends.append(exchange.publish(message, routing_key=w.input))
                await asyncio.gather(*sends)
                progress(min(start + BATCH, w.messages))

    async def read_outputs(self, into: list[Arrival]) -> None:
        connection = await self._connect()
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=1000)
            queue = await channel.declare_queue(self.check_queue, durable=True)
            async with queue.iterator() as messages:
                async for message in messages:
                    into.append(_arrival(message.body))
                    # After a reconnect the broker redelivers what was not acked; the send id
                    # tells those copies apart from real duplicates.
                    with contextlib.suppress(Exception):
                        await message.ack()

    def _queue_counts(self) -> dict[str, tuple[int, int]]:
        cmd = [sys.executable, self.tool, "rabbitmqctl", "list_queues", "-q", "--no-table-headers"]
        cmd += ["name", "messages_ready", "messages_unacknowledged"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=os.environ)
        counts = {}
        for line in out.stdout.splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[1].isdigit():
                counts[fields[0]] = (int(fields[1]), int(fields[2]))
        return counts

    async def settled(self) -> tuple[bool, str]:
        counts = await asyncio.to_thread(self._queue_counts)
        ready, unacked = counts.get(self.queue, (0, 0))
        text = f"{self.queue}: {ready} ready, {unacked} unacked"
        return ready == 0 and unacked == 0, text

    async def _drain(self, name: str, ack: bool) -> list[int]:
        """Every message of queue ``name``; with ``ack`` false they stay in the queue."""

        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return []
            seqs = []
            while (message := await queue.get(fail=False, no_ack=ack)) is not None:
                seqs.append(_seq(message.body))
            # Closing the connection returns what was not acknowledged to the queue.
            return seqs

    async def leftovers(self) -> Leftovers:
        remaining = await self._drain(self.queue, ack=False)
        stuck = [f"{self.queue} holds {len(remaining)}"] if remaining else []
        return Leftovers(await self._drain(self.dlq, ack=True), remaining, stuck)


def quiet_clients() -> None:
    for name in ("aiokafka", "aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
