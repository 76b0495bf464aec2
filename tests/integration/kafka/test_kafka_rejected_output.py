"""A processor output the broker rejects: the input is not committed past, is handled again
per the retry policy, then dead-lettered with the broker's reason."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
    ConfigResource,
    ConfigResourceType,
)
from pydantic import BaseModel
from streamlib_kafka.testing import read_topic

from streamlib import Message, StreamApp
from streamlib.testing.collector import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]

Config = Callable[..., dict[str, Any]]

TIMEOUT = 30.0
MAX_MESSAGE_BYTES = 2000
OVERSIZED = "x" * 5000


class Item(BaseModel):
    seq: int


async def create_topic(bootstrap: str, name: str, partitions: int, **configs: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()


async def shrink_limit(bootstrap: str, topic: str) -> None:
    """Lower ``topic``'s max.message.bytes after the app read it at provisioning, so the
    broker (not the binder's own size check) refuses the oversized output."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        limit = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, limit)])
    finally:
        await admin.close()


async def committed(bootstrap: str, group: str) -> dict[int, int]:
    """The offsets ``group`` committed, per partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


async def produce(bootstrap: str, topic: str, seqs: range) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for seq in seqs:
            await producer.send_and_wait(topic, orjson.dumps({"seq": seq}), partition=0)
    finally:
        await producer.stop()


async def test_an_output_rejected_while_the_next_record_runs_is_not_committed_past(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    source, target, group = unique("rej-in"), unique("rej-out"), unique("rej")
    await create_topic(kafka_bootstrap, source, 1)
    await create_topic(kafka_bootstrap, target, 1)
    bindings = {
        "relay-in-0": {
            "destination": source,
            "group": group,
            "consumer": {
                "max-attempts": 2,
                "retryable-exceptions": ["PublishError"],
                "back-off-initial-interval": 0.01,
                "dlq": True,
            },
        },
        "relay-out-0": {"destination": target},
    }
    # Idempotence off: a rejected record must not disturb the sequence numbers of later ones.
    binder = {"producer": {"enable-idempotence": False, "acks": 1}}
    app = StreamApp("rejected", config=kafka_config(bindings, binder))
    handled: Collector[int] = Collector()
    holding = asyncio.Event()
    release = asyncio.Event()

    @app.processor
    async def relay(msg: Message[Item]) -> str:
        seq = msg.payload.seq
        handled.add(seq)
        times = handled.items.count(seq)
        if seq == 1 and times == 1:
            # The output of record 0 leaves in a batch of its own (a rejected batch fails
            # every record in it).
            await asyncio.sleep(0.2)
        if seq == 2 and times == 1:
            # Still running when the broker rejects the output of record 1.
            await asyncio.sleep(1.5)
        if seq == 1 and times == 2:
            holding.set()
            await release.wait()
        return OVERSIZED if seq == 1 else f"out {seq}"

    async with app.run():
        await shrink_limit(kafka_bootstrap, target)
        await produce(kafka_bootstrap, source, range(10))
        async with asyncio.timeout(TIMEOUT):
            await holding.wait()
        # Record 1 is being handled again: whatever finished meanwhile, the group must not
        # have committed past it (a crash now would lose it otherwise).
        seen = []
        for _ in range(8):
            seen.append((await committed(kafka_bootstrap, group)).get(0, 0))
            await asyncio.sleep(0.25)
        release.set()
        await handled.wait_for(12, TIMEOUT)
        letters = await read_topic(kafka_bootstrap, f"error.{source}.{group}", 1, TIMEOUT, 0.5)
        outputs = await read_topic(kafka_bootstrap, target, 9, TIMEOUT, 0.5)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while (await committed(kafka_bootstrap, group)).get(0) != 10:
            assert loop.time() < deadline, "the group never committed offset 10"
            await asyncio.sleep(0.1)
    assert max(seen) <= 1, f"committed {seen} while record 1 was unfinished"
    counts = Counter(handled.items)
    # Two attempts of its own; one more when its refusal was shared with a later record's
    # output (a refused batch), which counts for no record.
    assert counts[1] in (2, 3), handled.items
    assert set(counts) == set(range(10))
    assert handled.items[:4] == [0, 1, 2, 1]
    assert {r.value.decode() for r in outputs} == {f"out {s}" for s in range(10) if s != 1}
    [letter] = letters
    assert orjson.loads(letter.value) == {"seq": 1}
    headers = dict(letter.headers)
    assert headers["x-exception-fqcn"] == b"streamlib.errors.PublishError"
    assert b"MESSAGE_SIZE_TOO_LARGE" in headers["x-exception-message"]


async def test_a_transaction_with_a_rejected_output_is_aborted_and_its_input_retried(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    source, target, group = unique("txrej-in"), unique("txrej-out"), unique("txrej")
    await create_topic(kafka_bootstrap, source, 1)
    await create_topic(kafka_bootstrap, target, 1)
    bindings = {
        "relay-in-0": {
            "destination": source,
            "group": group,
            "consumer": {
                "transactional": True,
                "max-attempts": 2,
                "retryable-exceptions": ["PublishError"],
                "back-off-initial-interval": 0.01,
                "dlq": True,
            },
        },
        "relay-out-0": {"destination": target},
    }
    app = StreamApp("txrejected", config=kafka_config(bindings))
    handled: Collector[int] = Collector()

    @app.processor
    async def relay(item: Item) -> str:
        handled.add(item.seq)
        return OVERSIZED if item.seq == 4 else f"out {item.seq}"

    async with app.run():
        await shrink_limit(kafka_bootstrap, target)
        await produce(kafka_bootstrap, source, range(10))
        letters = await read_topic(
            kafka_bootstrap,
            f"error.{source}.{group}",
            1,
            TIMEOUT,
            0.5,
            isolation_level="read_committed",
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while (await committed(kafka_bootstrap, group)).get(0) != 10:
            assert loop.time() < deadline, "the group never committed offset 10"
            await asyncio.sleep(0.1)
    outputs = await read_topic(
        kafka_bootstrap, target, 9, TIMEOUT, 0.5, isolation_level="read_committed"
    )
    per_input = Counter(r.value.decode() for r in outputs)
    assert per_input == {f"out {s}": 1 for s in range(10) if s != 4}
    assert Counter(handled.items)[4] in (2, 3), handled.items  # 3: a shared refusal
    [letter] = letters
    assert orjson.loads(letter.value) == {"seq": 4}
    assert b"MESSAGE_SIZE_TOO_LARGE" in dict(letter.headers)["x-exception-message"]


async def test_without_a_dlq_a_rejected_output_is_retried_then_logged_with_the_reason(
    kafka_bootstrap: str,
    kafka_config: Config,
    unique: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, target, group = unique("rejlog-in"), unique("rejlog-out"), unique("rejlog")
    await create_topic(kafka_bootstrap, source, 1)
    await create_topic(kafka_bootstrap, target, 1)
    bindings = {
        "relay-in-0": {
            "destination": source,
            "group": group,
            "consumer": {
                "max-attempts": 2,
                "retryable-exceptions": ["PublishError"],
                "back-off-initial-interval": 0.01,
            },
        },
        "relay-out-0": {"destination": target},
    }
    binder = {"producer": {"enable-idempotence": False, "acks": 1}}
    app = StreamApp("rejlog", config=kafka_config(bindings, binder))
    handled: Collector[int] = Collector()

    @app.processor
    async def relay(item: Item) -> str:
        handled.add(item.seq)
        if item.seq == 1:
            await asyncio.sleep(0.2)  # record 0's output leaves before this one
            return OVERSIZED
        return f"out {item.seq}"

    async with app.run():
        await shrink_limit(kafka_bootstrap, target)
        await produce(kafka_bootstrap, source, range(4))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while (await committed(kafka_bootstrap, group)).get(0) != 4:
            assert loop.time() < deadline, "the group never committed offset 4"
            await asyncio.sleep(0.1)
    outputs = await read_topic(kafka_bootstrap, target, 3, TIMEOUT, 0.5)
    assert {r.value.decode() for r in outputs} == {"out 0", "out 2", "out 3"}
    assert Counter(handled.items)[1] in (2, 3), handled.items  # 3: a shared refusal
    dropped = [r.getMessage() for r in caplog.records if "dropped (no DLQ)" in r.getMessage()]
    assert len(dropped) == 1
    assert "offset 1 " in dropped[0] and "MESSAGE_SIZE_TOO_LARGE" in dropped[0]


# A long linger puts the outputs of all ten records in one batch, which the broker refuses
# whole: the refusal is shared, and only the record at fault may pay for it.
BATCHING = {"producer": {"linger-ms": 300}}


@pytest.mark.parametrize("max_attempts", [1, 2])
async def test_a_batch_refused_whole_dead_letters_only_the_record_at_fault(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str], max_attempts: int
) -> None:
    source, target, group = unique("shared-in"), unique("shared-out"), unique("shared")
    await create_topic(kafka_bootstrap, source, 1)
    await create_topic(kafka_bootstrap, target, 1)
    bindings = {
        "relay-in-0": {
            "destination": source,
            "group": group,
            "consumer": {
                "max-attempts": max_attempts,
                "retryable-exceptions": ["PublishError"],
                "back-off-initial-interval": 0.01,
                "dlq": True,
            },
        },
        "relay-out-0": {"destination": target},
    }
    app = StreamApp("shared", config=kafka_config(bindings, BATCHING))
    handled: Collector[int] = Collector()

    @app.processor
    async def relay(item: Item) -> str:
        handled.add(item.seq)
        return OVERSIZED if item.seq == 4 else f"out {item.seq}"

    async with app.run():
        await shrink_limit(kafka_bootstrap, target)
        await produce(kafka_bootstrap, source, range(10))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while (await committed(kafka_bootstrap, group)).get(0) != 10:
            assert loop.time() < deadline, "the group never committed offset 10"
            await asyncio.sleep(0.1)
    letters = await read_topic(kafka_bootstrap, f"error.{source}.{group}", 1, TIMEOUT, 1.0)
    outputs = await read_topic(kafka_bootstrap, target, 9, TIMEOUT, 0.5)
    assert [orjson.loads(r.value) for r in letters] == [{"seq": 4}]
    assert b"MESSAGE_SIZE_TOO_LARGE" in dict(letters[0].headers)["x-exception-message"]
    assert {r.value.decode() for r in outputs} == {f"out {s}" for s in range(10) if s != 4}
    # The shared refusal is not counted: record 4 fails max-attempts times on its own.
    assert Counter(handled.items)[4] >= max_attempts, handled.items


async def test_a_transaction_whose_batch_is_refused_whole_retries_its_records_alone(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    source, target, group = unique("txshared-in"), unique("txshared-out"), unique("txshared")
    await create_topic(kafka_bootstrap, source, 1)
    await create_topic(kafka_bootstrap, target, 1)
    bindings = {
        "relay-in-0": {
            "destination": source,
            "group": group,
            "consumer": {
                "transactional": True,
                "max-attempts": 1,
                "retryable-exceptions": ["PublishError"],
                "dlq": True,
            },
        },
        "relay-out-0": {"destination": target},
    }
    app = StreamApp("txshared", config=kafka_config(bindings, BATCHING))
    handled: Collector[int] = Collector()

    @app.processor
    async def relay(item: Item) -> str:
        handled.add(item.seq)
        return OVERSIZED if item.seq == 4 else f"out {item.seq}"

    async with app.run():
        await shrink_limit(kafka_bootstrap, target)
        await produce(kafka_bootstrap, source, range(10))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while (await committed(kafka_bootstrap, group)).get(0) != 10:
            assert loop.time() < deadline, "the group never committed offset 10"
            await asyncio.sleep(0.1)
    committed_only = {"isolation_level": "read_committed"}
    letters = await read_topic(
        kafka_bootstrap, f"error.{source}.{group}", 1, TIMEOUT, 1.0, **committed_only
    )
    outputs = await read_topic(kafka_bootstrap, target, 9, TIMEOUT, 0.5, **committed_only)
    assert [orjson.loads(r.value) for r in letters] == [{"seq": 4}]
    assert Counter(r.value.decode() for r in outputs) == {
        f"out {s}": 1 for s in range(10) if s != 4
    }
