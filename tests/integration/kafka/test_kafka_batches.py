"""Batch handlers on Kafka: what each batch holds, and what is committed and dead-lettered
for the outcomes of its records (the handler's, and its outputs' confirmations)."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest
import streamlib_kafka.consumer
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from app_process import create_topics
from batch_binding import (
    ScriptedBatches,
    committed,
    consumer_spec,
    kafka_binder,
    produce,
    seq_of,
    shrink_limit,
    wait_committed,
)
from pydantic import BaseModel
from streamlib_kafka.testing import read_topic

from streamlib import StreamApp
from streamlib.binder import (
    ACK,
    Envelope,
    Failure,
    Outcome,
    ProducerProperties,
    ProducerSpec,
)

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]

Config = Callable[..., dict[str, Any]]

TIMEOUT = 30.0
OVERSIZED = b"x" * 5000
FAST_RETRY = {"back-off-initial-interval": 0.01, "retryable-exceptions": ["PublishError"]}


async def test_batches_hold_one_partition_in_order_and_never_exceed_the_size(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    topic, group = unique("batch-order"), unique("batch-order")
    await create_topics(kafka_bootstrap, {topic: 3})
    await produce(kafka_bootstrap, topic, range(600), key=lambda seq: b"k%d" % (seq % 10))

    async def ack(envelopes: Sequence[Envelope]) -> list[Outcome]:
        return [ACK] * len(envelopes)

    dispatch = ScriptedBatches(25, 0.05, ack)
    async with kafka_binder(kafka_bootstrap) as binder:
        binding = await binder.bind_consumer(consumer_spec(topic, group), dispatch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while len(dispatch.seqs) < 600 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        offsets: dict[int, list[int]] = defaultdict(list)
        for batch in dispatch.batches:
            for partition, offset, _ in batch:
                offsets[partition].append(offset)
        await wait_committed(
            kafka_bootstrap, group, {p: len(o) for p, o in offsets.items()}, TIMEOUT
        )
        await binding.stop()
    assert sorted(dispatch.seqs) == list(range(600))
    # Fetched ahead of the consumer, the records come in full batches of 25 and no more.
    assert max(len(batch) for batch in dispatch.batches) == 25
    assert all(batch for batch in dispatch.batches)
    assert all(len({p for p, _, _ in batch}) == 1 for batch in dispatch.batches)
    assert len(offsets) == 3
    for seen in offsets.values():
        assert seen == list(range(len(seen)))
    # Records of one key (one partition) keep the order they were sent in.
    by_key: dict[int, list[int]] = defaultdict(list)
    for seq in dispatch.seqs:
        by_key[seq % 10].append(seq)
    assert all(seqs == sorted(seqs) for seqs in by_key.values())


async def test_a_failed_record_of_a_batch_is_dead_lettered_and_the_others_committed_once(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    topic, group = unique("batch-partial"), unique("batch-partial")
    await create_topics(kafka_bootstrap, {topic: 1})
    await produce(kafka_bootstrap, topic, range(10))

    async def fail_four(envelopes: Sequence[Envelope]) -> list[Outcome]:
        return [
            Outcome(failure=Failure(ValueError("bad amount"), 1)) if seq_of(e) == 4 else ACK
            for e in envelopes
        ]

    dispatch = ScriptedBatches(10, 0.5, fail_four)
    async with kafka_binder(kafka_bootstrap) as binder:
        await binder.bind_consumer(consumer_spec(topic, group, dlq=True), dispatch)
        await wait_committed(kafka_bootstrap, group, {0: 10}, TIMEOUT)
    letters = await read_topic(kafka_bootstrap, f"error.{topic}.{group}", 1, TIMEOUT, 0.5)
    assert [orjson.loads(r.value) for r in letters] == [{"seq": 4}]
    assert dict(letters[0].headers)["x-exception-message"] == b"bad amount"
    # One batch, nothing redelivered: the succeeded records were handled once.
    assert [[seq for _, _, seq in batch] for batch in dispatch.batches] == [list(range(10))]


@pytest.mark.parametrize("transactional", [False, True])
async def test_a_batch_whose_output_is_rejected_dead_letters_only_the_record_at_fault(
    kafka_bootstrap: str, unique: Callable[[str], str], transactional: bool
) -> None:
    source, target, group = unique("batch-rej-in"), unique("batch-rej-out"), unique("batch-rej")
    await create_topics(kafka_bootstrap, {source: 1, target: 1})
    await produce(kafka_bootstrap, source, range(10))
    holding = asyncio.Event()
    release = asyncio.Event()
    alone: list[int] = []

    async with kafka_binder(kafka_bootstrap) as binder:
        output = await binder.bind_producer(ProducerSpec("out-0", target, ProducerProperties()))
        await shrink_limit(kafka_bootstrap, target, 2000)

        async def relay(envelopes: Sequence[Envelope]) -> list[Outcome]:
            seqs = [seq_of(e) for e in envelopes]
            if len(seqs) == 1:
                alone.extend(seqs)
                if seqs == [4] and alone.count(4) == 1 and not transactional:
                    holding.set()
                    await release.wait()
            bodies = [OVERSIZED if s == 4 else b"out %d" % s for s in seqs]
            confirmation = await output.send_many([Envelope(b) for b in bodies])
            # One confirmation for the whole batch's outputs, as a batch processor's.
            return [Outcome(pending=confirmation)] * len(envelopes)

        dispatch = ScriptedBatches(10, 0.5, relay)
        consumer = {"dlq": True, "max-attempts": 2, "transactional": transactional, **FAST_RETRY}
        await binder.bind_consumer(consumer_spec(source, group, **consumer), dispatch)
        seen = []
        if not transactional:
            async with asyncio.timeout(TIMEOUT):
                await holding.wait()
            # Record 4 is being handled alone after its batch's outputs were refused
            # together: the group must not have committed past it.
            for _ in range(6):
                seen.append((await committed(kafka_bootstrap, group)).get(0, 0))
                await asyncio.sleep(0.15)
            release.set()
        await wait_committed(kafka_bootstrap, group, {0: 10}, TIMEOUT)
    assert max(seen, default=0) <= 4, f"committed {seen} while record 4 was unfinished"
    read = {"isolation_level": "read_committed"}
    letters = await read_topic(kafka_bootstrap, f"error.{source}.{group}", 1, TIMEOUT, 0.5, **read)
    outputs = await read_topic(kafka_bootstrap, target, 9, TIMEOUT, 0.5, **read)
    assert [orjson.loads(r.value) for r in letters] == [{"seq": 4}]
    assert b"MESSAGE_SIZE_TOO_LARGE" in dict(letters[0].headers)["x-exception-message"]
    # The refused batch wrote nothing; every other record's output arrived once.
    assert Counter(r.value for r in outputs) == {b"out %d" % s: 1 for s in range(10) if s != 4}
    assert [s for _, _, s in dispatch.batches[0]] == list(range(10))
    # The shared refusal is charged to no record: all are redelivered alone, and record 4
    # fails its two attempts on its own.
    assert alone == [0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9]


class Item(BaseModel):
    seq: int


@pytest.mark.parametrize("transactional", [False, True])
async def test_a_batch_processor_whose_outputs_are_refused_dead_letters_only_the_one_at_fault(
    kafka_bootstrap: str,
    kafka_config: Config,
    unique: Callable[[str], str],
    transactional: bool,
) -> None:
    source, target, group = unique("bproc-in"), unique("bproc-out"), unique("bproc")
    await create_topics(kafka_bootstrap, {source: 1, target: 1})
    consumer = {
        "batch-size": 10,
        "batch-wait-ms": 500,
        "dlq": True,
        "max-attempts": 2,
        "transactional": transactional,
        **FAST_RETRY,
    }
    bindings = {
        "relay-in-0": {"destination": source, "group": group, "consumer": consumer},
        "relay-out-0": {"destination": target},
    }
    app = StreamApp("bproc", config=kafka_config(bindings))
    calls: list[list[int]] = []

    @app.processor
    async def relay(items: list[Item]) -> list[str]:
        calls.append([item.seq for item in items])
        return ["x" * 5000 if item.seq == 4 else f"out {item.seq}" for item in items]

    async with app.run():
        await shrink_limit(kafka_bootstrap, target, 2000)
        await produce(kafka_bootstrap, source, range(10))
        await wait_committed(kafka_bootstrap, group, {0: 10}, TIMEOUT)
    read = {"isolation_level": "read_committed"}
    letters = await read_topic(kafka_bootstrap, f"error.{source}.{group}", 1, TIMEOUT, 0.5, **read)
    outputs = await read_topic(kafka_bootstrap, target, 9, TIMEOUT, 0.5, **read)
    assert [orjson.loads(r.value) for r in letters] == [{"seq": 4}]
    assert b"MESSAGE_SIZE_TOO_LARGE" in dict(letters[0].headers)["x-exception-message"]
    assert Counter(r.value for r in outputs) == {b"out %d" % s: 1 for s in range(10) if s != 4}
    assert calls[0] == list(range(10))
    assert calls[1:] == [[s] for s in [0, 1, 2, 3, 4, 4, 5, 6, 7, 8, 9]]


async def test_a_record_that_cannot_become_a_message_fails_alone_beside_its_batch(
    kafka_bootstrap: str, unique: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    decode = streamlib_kafka.consumer.decode_headers

    def decode_or_fail(raw: Any) -> dict[str, Any]:
        if any(name == "x-unreadable" for name, _ in raw or ()):
            raise ValueError("header x-unreadable cannot be read")
        return decode(raw)

    monkeypatch.setattr(streamlib_kafka.consumer, "decode_headers", decode_or_fail)
    topic, group = unique("batch-odd"), unique("batch-odd")
    await create_topics(kafka_bootstrap, {topic: 1})
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for seq in range(6):
            headers = [("x-unreadable", b"?")] if seq == 2 else []
            await producer.send_and_wait(
                topic, orjson.dumps({"seq": seq}), partition=0, headers=headers
            )
    finally:
        await producer.stop()

    async def ack(envelopes: Sequence[Envelope]) -> list[Outcome]:
        return [ACK] * len(envelopes)

    dispatch = ScriptedBatches(10, 0.5, ack)
    async with kafka_binder(kafka_bootstrap) as binder:
        await binder.bind_consumer(consumer_spec(topic, group, dlq=True), dispatch)
        await wait_committed(kafka_bootstrap, group, {0: 6}, TIMEOUT)
    letters = await read_topic(kafka_bootstrap, f"error.{topic}.{group}", 1, TIMEOUT, 0.5)
    assert [orjson.loads(r.value) for r in letters] == [{"seq": 2}]
    assert dict(letters[0].headers)["x-exception-message"] == b"header x-unreadable cannot be read"
    assert [[seq for _, _, seq in batch] for batch in dispatch.batches] == [[0, 1, 3, 4, 5]]


async def test_a_batch_waits_batch_wait_for_more_of_its_partition(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    topic, group = unique("batch-wait"), unique("batch-wait")
    await create_topics(kafka_bootstrap, {topic: 1})

    async def ack(envelopes: Sequence[Envelope]) -> list[Outcome]:
        return [ACK] * len(envelopes)

    # A wait far longer than the pause between the two sends: the first five records wait
    # for the other five, and the batch is handed over once it is full.
    dispatch = ScriptedBatches(10, 10.0, ack)
    async with kafka_binder(kafka_bootstrap) as binder:
        await binder.bind_consumer(consumer_spec(topic, group), dispatch)
        await produce(kafka_bootstrap, topic, range(5))
        await asyncio.sleep(0.5)
        assert dispatch.batches == []
        await produce(kafka_bootstrap, topic, range(5, 10))
        await wait_committed(kafka_bootstrap, group, {0: 10}, TIMEOUT)
    assert [[seq for _, _, seq in batch] for batch in dispatch.batches] == [list(range(10))]


async def test_batches_stay_within_max_in_flight_and_release_it(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    topic, group = unique("batch-room"), unique("batch-room")
    await create_topics(kafka_bootstrap, {topic: 1})
    await produce(kafka_bootstrap, topic, range(300))

    async def ack(envelopes: Sequence[Envelope]) -> list[Outcome]:
        return [ACK] * len(envelopes)

    # Fetching stops at 30 records in hand: a batch never holds more, and each handled batch
    # makes room for the next fetch (a leak would stall the partition before offset 300).
    dispatch = ScriptedBatches(100, 0.2, ack)
    async with kafka_binder(kafka_bootstrap) as binder:
        spec = consumer_spec(topic, group, **{"max-in-flight": 30})
        await binder.bind_consumer(spec, dispatch)
        await wait_committed(kafka_bootstrap, group, {0: 300}, TIMEOUT)
    assert max(len(batch) for batch in dispatch.batches) == 30
    assert dispatch.seqs == list(range(300))


async def test_stop_finishes_the_batch_in_hand_commits_it_and_handles_no_more(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    topic, group = unique("batch-stop"), unique("batch-stop")
    await create_topics(kafka_bootstrap, {topic: 1})
    await produce(kafka_bootstrap, topic, range(20))
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold(envelopes: Sequence[Envelope]) -> list[Outcome]:
        holding.set()
        await release.wait()
        return [ACK] * len(envelopes)

    dispatch = ScriptedBatches(5, 0.5, hold)
    async with kafka_binder(kafka_bootstrap) as binder:
        binding = await binder.bind_consumer(consumer_spec(topic, group), dispatch)
        async with asyncio.timeout(TIMEOUT):
            await holding.wait()
        stopping = asyncio.create_task(binding.stop())
        await asyncio.sleep(0.2)
        assert not stopping.done(), "stop did not wait for the batch in hand"
        release.set()
        await stopping
        assert await committed(kafka_bootstrap, group) == {0: 5}
    assert [[seq for _, _, seq in batch] for batch in dispatch.batches] == [list(range(5))]


async def test_a_rebalance_mid_batch_loses_nothing_and_commits_every_record(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    topic, group = unique("batch-rebalance"), unique("batch-rebalance")
    await create_topics(kafka_bootstrap, {topic: 2})
    await produce(kafka_bootstrap, topic, range(800), key=lambda seq: b"k%d" % (seq % 4))

    async def slow(envelopes: Sequence[Envelope]) -> list[Outcome]:
        await asyncio.sleep(0.05)
        return [ACK] * len(envelopes)

    first, second = ScriptedBatches(10, 0.0, slow), ScriptedBatches(10, 0.0, slow)
    settings = {"consumer": {"session-timeout-ms": 6000, "heartbeat-interval-ms": 500}}
    async with kafka_binder(kafka_bootstrap, **settings) as a:
        await a.bind_consumer(consumer_spec(topic, group), first)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while len(first.seqs) < 100 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        async with kafka_binder(kafka_bootstrap, **settings) as b:
            # Joining makes the group take partitions from the first member mid-batch.
            await b.bind_consumer(consumer_spec(topic, group), second)
            while len(set(first.seqs) | set(second.seqs)) < 800 and loop.time() < deadline:
                await asyncio.sleep(0.05)
            handled = {(p, o) for d in (first, second) for batch in d.batches for p, o, _ in batch}
            ends = {p: 1 + max(o for q, o in handled if q == p) for p, _ in handled}
            await wait_committed(kafka_bootstrap, group, ends, TIMEOUT)
    assert len(handled) == 800 == sum(ends.values())
    assert second.batches, "the second member got no partition"
    assert all(len(batch) <= 10 for d in (first, second) for batch in d.batches)
