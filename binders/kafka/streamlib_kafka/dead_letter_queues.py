"""The DLQ commands on Kafka: read, replay and purge ``error.<destination>.<group>`` topics.

Kafka cannot delete one record, so a message "leaves" a DLQ topic when the consumer group
``streamlib-dlq-replay`` commits past it: reading starts at that group's committed offset
(the topic's start when there is none) and stops at the end offsets seen when it began.
A replay commits a record's offset only after the broker acknowledged its copy; a purge
commits the end offsets. The topic's records stay until its retention drops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Generator, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from streamlib.binder import (
    REPLAY_COUNT,
    ConnectionLostError,
    ConsumerSpec,
    DeadLetter,
    is_dead_letter_header,
    next_replay_count,
)

from . import naming
from .errors import KafkaError, mapped, start_client, to_streamlib
from .headers import JSON_TYPES, decode_headers

REPLAY_GROUP = "streamlib-dlq-replay"
"""Consumer group whose committed offsets mark what has left each DLQ topic."""
FETCH_TIMEOUT_MS = 500
STALL_TIMEOUT = 30.0
"""Seconds a read waits for the next record of a partition short of its end offset."""

_BINARY_INTS = {
    "x-original-partition": ">i",
    "x-original-offset": ">q",
    "x-original-timestamp": ">q",
}


def readable_headers(raw: Sequence[tuple[str, bytes | None]]) -> dict[str, Any]:
    """Record headers for people: Spring-typed values decoded, other textual values as
    ``str``, the binary ``x-original-*`` numbers as ``int``, other bytes as they are."""
    out = decode_headers(list(raw))
    for name, value in out.items():
        if not isinstance(value, bytes):
            continue
        fmt = _BINARY_INTS.get(name)
        if fmt is not None and len(value) == struct.calcsize(fmt):
            out[name] = struct.unpack(fmt, value)[0]
            continue
        with contextlib.suppress(UnicodeDecodeError):
            out[name] = value.decode("utf-8")
    return out


def replay_headers(raw: Sequence[tuple[str, bytes | None]], count: int) -> list[tuple[str, bytes]]:
    """The headers of a replayed copy: the original's, without the dead-letter headers and
    any earlier ``x-replay-count``, then ``x-replay-count``, typed as an Integer in
    ``spring_json_header_types`` so Spring and streamlib consumers read a number."""
    types: dict[str, Any] = {}
    out: list[tuple[str, bytes]] = []
    for name, value in raw:
        if name == JSON_TYPES and value is not None:
            with contextlib.suppress(orjson.JSONDecodeError):
                parsed = orjson.loads(value)
                if isinstance(parsed, dict):
                    types = parsed
        elif not is_dead_letter_header(name) and name != REPLAY_COUNT:
            out.append((name, value if value is not None else b""))
    types = {k: v for k, v in types.items() if not is_dead_letter_header(k)}
    types[REPLAY_COUNT] = "java.lang.Integer"
    out.append((REPLAY_COUNT, str(count).encode()))
    out.append((JSON_TYPES, orjson.dumps(types)))
    return out


def letter_of(record: Any) -> DeadLetter:
    headers = readable_headers(record.headers or ())
    original = headers.get("x-original-topic")
    original = original if isinstance(original, str) else None
    if original is not None:
        origin = f"{original} partition {headers.get('x-original-partition', '?')} offset " + str(
            headers.get("x-original-offset", "?")
        )
    else:
        origin = "unknown (no x-original-topic header)"
    replays = headers.get(REPLAY_COUNT)
    return DeadLetter(
        dlq=record.topic,
        position=f"partition {record.partition} offset {record.offset}",
        body=record.value if record.value is not None else b"",
        headers=headers,
        key=record.key,
        timestamp=record.timestamp / 1000.0 if record.timestamp is not None else None,
        original=original,
        origin=origin,
        # Each failure of a replayed copy writes a new dead letter carrying its count.
        times_dead_lettered=(replays if isinstance(replays, int) else 0) + 1,
        token=record,
    )


class _Acked:
    """The broker's acknowledgement of one copy; awaiting it raises PublishError."""

    __slots__ = ("_future", "_topic")

    def __init__(self, future: Any, topic: str) -> None:
        self._future = future
        self._topic = topic

    def __await__(self) -> Generator[Any, None, None]:
        try:
            yield from self._future.__await__()
        except KafkaError as exc:
            raise to_streamlib(exc, f"replay to {self._topic!r}", publish=True) from exc


class DlqReader:
    """A consumer of one DLQ topic positioned at what has not left it yet."""

    def __init__(self, client_kwargs: dict[str, Any], topic: str, group: str) -> None:
        self.topic = topic
        self._client_kwargs = client_kwargs
        self._consumer = AIOKafkaConsumer(
            **client_kwargs,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        self.starts: dict[Any, int] = {}
        self.ends: dict[Any, int] = {}

    async def open(self) -> None:
        """Connect and take the positions: committed (or first) offset to end offset."""
        partitions = await self._partitions()
        if not partitions:
            return
        await start_client(self._consumer, f"read {self.topic!r}")
        with mapped(f"read {self.topic!r}"):
            tps = [TopicPartition(self.topic, p) for p in partitions]
            self._consumer.assign(tps)
            firsts = await self._consumer.beginning_offsets(tps)
            self.ends = await self._consumer.end_offsets(tps)
            for tp in tps:
                committed = await self._consumer.committed(tp)
                self.starts[tp] = max(committed or 0, firsts[tp])

    async def _partitions(self) -> list[int]:
        """The topic's partitions, none when it does not exist (it is not created)."""
        admin = AIOKafkaAdminClient(**self._client_kwargs)
        await start_client(admin, f"look up {self.topic!r}")
        try:
            with mapped(f"look up {self.topic!r}"):
                if self.topic not in await admin.list_topics():
                    return []
                [described] = await admin.describe_topics([self.topic])
            return sorted(p["partition"] for p in described["partitions"])
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    @property
    def size(self) -> int:
        # With transactions, markers take offsets too: an upper bound then.
        return sum(max(self.ends[tp] - start, 0) for tp, start in self.starts.items())

    async def records(self) -> AsyncGenerator[Any, None]:
        """Every record between the positions taken at ``open``, partition by partition."""
        consumer = self._consumer
        for tp, start in self.starts.items():
            end = self.ends[tp]
            if start >= end:
                continue
            with mapped(f"read {self.topic!r}"):
                consumer.seek(tp, start)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STALL_TIMEOUT
            while True:
                with mapped(f"read {self.topic!r}"):
                    if await consumer.position(tp) >= end:
                        break
                    batches = await consumer.getmany(tp, timeout_ms=FETCH_TIMEOUT_MS)
                if batches.get(tp):
                    deadline = loop.time() + STALL_TIMEOUT
                elif loop.time() > deadline:
                    raise ConnectionLostError(
                        f"read {self.topic!r} partition {tp.partition}: no record within "
                        f"{STALL_TIMEOUT:g}s though the partition's end offset is {end}"
                    )
                for record in batches.get(tp, ()):
                    if record.offset >= end:
                        break
                    yield record

    async def commit(self, offsets: dict[Any, int]) -> None:
        with mapped(f"commit the replay group's offsets on {self.topic!r}"):
            await self._consumer.commit(offsets)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._consumer.stop()


class KafkaReplaySession:
    """Replays one DLQ topic: copies go out through ``producer``, offsets are committed
    after the copies are acknowledged."""

    def __init__(self, reader: DlqReader, producer: Any) -> None:
        self._reader = reader
        self._producer = producer
        self._partitions: dict[str, set[int]] = {}

    @property
    def size(self) -> int:
        return self._reader.size

    async def letters(self) -> AsyncGenerator[DeadLetter, None]:
        async for record in self._reader.records():
            yield letter_of(record)

    async def _partitions_of(self, topic: str) -> set[int]:
        known = self._partitions.get(topic)
        if known is None:
            with mapped(f"look up topic {topic!r}", publish=True):
                known = self._partitions[topic] = set(await self._producer.partitions_for(topic))
        return known

    async def forward(self, letter: DeadLetter, destination: str | None) -> Awaitable[None]:
        record = letter.token
        topic = destination or letter.original
        assert topic is not None
        partition = None
        if destination is None:
            # Back to the partition it came from (a partitioned producer's record has no key).
            original = letter.headers.get("x-original-partition")
            if isinstance(original, int) and original in await self._partitions_of(topic):
                partition = original
        headers = replay_headers(record.headers or (), next_replay_count(letter.headers))
        with mapped(f"replay to {topic!r}", publish=True):
            future = await self._producer.send(
                topic, value=record.value, key=record.key, partition=partition, headers=headers
            )
        return _Acked(future, topic)

    async def remove(self, letters: Sequence[DeadLetter]) -> None:
        offsets: dict[Any, int] = {}
        for letter in letters:
            record = letter.token
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        await self._reader.commit(offsets)


class KafkaDeadLetterQueues:
    """``DeadLetterQueues`` of the Kafka binder."""

    def __init__(
        self,
        client_kwargs: dict[str, Any],
        producer_kwargs: dict[str, Any],
        group: str = REPLAY_GROUP,
    ) -> None:
        self._client_kwargs = client_kwargs
        self._producer_kwargs = producer_kwargs
        self._group = group

    def dlq_of(self, spec: ConsumerSpec) -> str | None:
        if not spec.group or not spec.properties.dlq:
            return None
        return naming.dlq_topic(spec.destination, spec.group)

    @contextlib.asynccontextmanager
    async def _reader(self, dlq: str) -> AsyncIterator[DlqReader]:
        reader = DlqReader(self._client_kwargs, dlq, self._group)
        try:
            await reader.open()
            yield reader
        finally:
            await reader.aclose()

    async def browse(self, dlq: str) -> AsyncGenerator[DeadLetter, None]:
        async with self._reader(dlq) as reader:
            async for record in reader.records():
                yield letter_of(record)

    @contextlib.asynccontextmanager
    async def replay(self, dlq: str) -> AsyncIterator[KafkaReplaySession]:
        async with self._reader(dlq) as reader:
            producer = AIOKafkaProducer(**self._client_kwargs, **self._producer_kwargs)
            await start_client(producer, "start the replay producer")
            try:
                yield KafkaReplaySession(reader, producer)
            finally:
                with contextlib.suppress(Exception):
                    await producer.stop()

    async def purge(self, dlq: str) -> int:
        async with self._reader(dlq) as reader:
            if reader.ends:
                await reader.commit(dict(reader.ends))
            return reader.size

    async def aclose(self) -> None:
        return None
