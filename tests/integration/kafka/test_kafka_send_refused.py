"""When the broker would refuse a record, that message fails with the reason, alone: records
and dead letters are checked against the topic's limits, and the shared producer keeps
working."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
    ConfigResource,
    ConfigResourceType,
)
from streamlib_kafka.testing import read_topic

from streamlib import BindingError, Message, PublishError, StreamApp

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]

Config = Callable[..., dict[str, Any]]

TIMEOUT = 20.0
LIMIT = 2000
# With partition-count 2 and Java's String.hashCode: "a" -> partition 1, "b" -> partition 0.
KEYS = ("a", "b")


async def create_topic(
    bootstrap: str, topic: str, partitions: int, configs: dict[str, str] | None = None
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs or {})])
    finally:
        await admin.close()


async def alter_topic(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs)])
    finally:
        await admin.close()


async def send_all(app: StreamApp, sends: list[tuple[str, bytes, str]]) -> dict[bytes, str]:
    """Send each ``(destination, body, key)``; the outcome per body: "ok" or the error."""
    outcomes = {}
    for destination, body, key in sends:
        try:
            await app.send(destination, body, key=key)
            outcomes[body] = "ok"
        except PublishError as exc:
            outcomes[body] = f"{type(exc).__name__}: {exc}"
    return outcomes


async def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def committed(bootstrap: str, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    meta = offsets.get(TopicPartition(topic, 0))
    return -1 if meta is None else int(meta.offset)


def arrived(records: list[Any]) -> Counter[bytes]:
    return Counter(record.value for record in records)


async def test_an_oversized_send_fails_alone_and_later_sends_succeed(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    small, other, inputs = unique("small"), unique("other"), unique("in")
    await create_topic(kafka_bootstrap, small, 2, {"max.message.bytes": str(LIMIT)})
    partitioned = {"partition-key": "key", "partition-count": 2}
    bindings = {
        small: {"producer": partitioned},
        "relay-in-0": {"destination": inputs, "group": "g"},
        "relay-out-0": {"destination": small, "producer": partitioned},
    }
    app = StreamApp("limits", config=kafka_config(bindings))

    @app.processor
    async def relay(msg: Message[bytes]) -> Message[bytes]:
        return Message(msg.payload, key=msg.key.decode() if msg.key else None)

    big = b"x" * (3 * LIMIT)
    async with app.run():
        # The broker keeps the producer's sequence per partition once it wrote a record.
        before = [(small, b"before-%s" % key.encode(), key) for key in KEYS]
        assert await send_all(app, before) == {body: "ok" for _, body, _ in before}
        with pytest.raises(PublishError) as refused:
            await app.send(small, big, key="b")
        later = [(small, b"app-%d" % n, KEYS[n % 2]) for n in range(10)]
        later += [(other, b"other-%d" % n, KEYS[n % 2]) for n in range(4)]
        outcomes = await send_all(app, later)
        relayed = [b"relay-%d" % n for n in range(6)]
        for n, body in enumerate(relayed):
            await app.send(inputs, body, key=KEYS[n % 2])
        records = await read_topic(kafka_bootstrap, small, 18, TIMEOUT, 0.5)
        others = await read_topic(kafka_bootstrap, other, 4, TIMEOUT, 0.5)
    assert outcomes == {body: "ok" for _, body, _ in later}
    reason = str(refused.value)
    assert refused.value.retriable is False
    assert repr(small) in reason and str(LIMIT) in reason and "max.message.bytes" in reason
    expected = Counter(body for dest, body, _ in before + later if dest == small)
    expected += Counter(relayed)
    assert arrived(records) == expected
    assert arrived(others) == Counter(body for dest, body, _ in later if dest == other)
    assert {record.partition for record in records} == {0, 1}


async def test_an_oversized_output_is_dead_lettered_and_later_outputs_arrive(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    small, inputs = unique("small"), unique("in")
    await create_topic(kafka_bootstrap, small, 1, {"max.message.bytes": str(LIMIT)})
    bindings = {
        "grow-in-0": {
            "destination": inputs,
            "group": "g",
            "consumer": {"max-attempts": 2, "back-off-initial-interval": 0.01, "dlq": True},
        },
        "grow-out-0": {"destination": small},
    }
    app = StreamApp("limits", config=kafka_config(bindings))
    handled: Counter[bytes] = Counter()

    @app.processor
    async def grow(body: bytes) -> bytes:
        handled[body] += 1
        return body * (3 * LIMIT) if body == b"3" else body

    bodies = [b"%d" % n for n in range(8)]
    async with app.run():
        for body in bodies:
            await app.send(inputs, body)
        records = await read_topic(kafka_bootstrap, small, 7, TIMEOUT, 0.5)
        letters = await read_topic(kafka_bootstrap, f"error.{inputs}.g", 1, TIMEOUT, 0.5)
    assert arrived(records) == Counter(body for body in bodies if body != b"3")
    assert [letter.value for letter in letters] == [b"3"]
    message = dict(letters[0].headers)["x-exception-message"].decode()
    assert repr(small) in message and str(LIMIT) in message
    assert handled == Counter({**{body: 1 for body in bodies}, b"3": 1})


async def test_a_producer_whose_record_the_broker_refused_is_replaced(
    kafka_bootstrap: str,
    kafka_config: Config,
    unique: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The topic's limit shrinks after the binding learned it: the broker refuses the record,
    which breaks the idempotent producer's sequence; the binder replaces the producer."""
    small = unique("small")
    await create_topic(kafka_bootstrap, small, 2)
    bindings = {small: {"producer": {"partition-key": "key", "partition-count": 2}}}
    app = StreamApp("limits", config=kafka_config(bindings))
    big = b"x" * (3 * LIMIT)
    async with app.run():
        await app.send(small, b"before", key="b")
        await alter_topic(kafka_bootstrap, small, {"max.message.bytes": str(LIMIT)})
        with caplog.at_level(logging.WARNING, logger="streamlib.kafka"):
            with pytest.raises(PublishError) as refused:
                await app.send(small, big, key="b")
            later = [(small, b"app-%d" % n, KEYS[n % 2]) for n in range(10)]
            outcomes = await send_all(app, later)
        records = await read_topic(kafka_bootstrap, small, 11, TIMEOUT, 0.5)
    assert outcomes == {body: "ok" for _, body, _ in later}
    assert "MESSAGE_SIZE_TOO_LARGE" in str(refused.value)
    assert refused.value.retriable is False
    assert arrived(records) == Counter([b"before"] + [body for _, body, _ in later])
    replaced = [r.getMessage() for r in caplog.records if "replacing" in r.getMessage()]
    assert len(replaced) == 1 and "MESSAGE_SIZE_TOO_LARGE" in replaced[0]


async def test_a_dead_letter_with_a_long_exception_is_cut_to_fit_the_dlq_topic(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    inputs = unique("in")
    dlq_limit = 4000
    await create_topic(
        kafka_bootstrap, f"error.{inputs}.g", 1, {"max.message.bytes": str(dlq_limit)}
    )
    bindings = {
        "take-in-0": {
            "destination": inputs,
            "group": "g",
            "consumer": {"max-attempts": 1, "dlq": True},
        }
    }
    app = StreamApp("limits", config=kafka_config(bindings))
    handled: Counter[bytes] = Counter()

    @app.sink
    async def take(body: bytes) -> None:
        handled[body] += 1
        if body == b"2":
            raise ValueError("too long to tell " + "why " * 20_000)

    bodies = [b"%d" % n for n in range(5)]
    async with app.run():
        for body in bodies:
            await app.send(inputs, body)
        letters = await read_topic(kafka_bootstrap, f"error.{inputs}.g", 1, TIMEOUT, 0.5)
    assert handled == Counter(bodies)
    assert [letter.value for letter in letters] == [b"2"]
    headers = dict(letters[0].headers)
    assert headers["x-exception-fqcn"] == b"builtins.ValueError"
    assert headers["x-original-topic"] == inputs.encode()
    for name in ("x-exception-message", "x-exception-stacktrace"):
        assert b"... [truncated " in headers[name], name
    assert headers["x-exception-message"].startswith(b"too long to tell why why")
    assert headers["x-exception-stacktrace"].startswith(b"Traceback (most recent call last)")
    assert await committed(kafka_bootstrap, "g", inputs) == len(bodies)


async def test_a_record_without_key_for_a_compacted_topic_fails_alone(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    compacted = unique("keyed")
    await create_topic(kafka_bootstrap, compacted, 2, {"cleanup.policy": "compact"})
    app = StreamApp("refused", config=kafka_config())
    async with app.run():
        await app.send(compacted, b"before", key="b")
        with pytest.raises(PublishError) as refused:
            await app.send(compacted, b"unkeyed")
        later = [(compacted, b"app-%d" % n, KEYS[n % 2]) for n in range(6)]
        outcomes = await send_all(app, later)
        records = await read_topic(kafka_bootstrap, compacted, 7, TIMEOUT, 0.5)
    assert outcomes == {body: "ok" for _, body, _ in later}
    assert "cleanup.policy compact" in str(refused.value)
    assert repr(compacted) in str(refused.value)
    assert refused.value.retriable is False
    assert arrived(records) == Counter([b"before"] + [body for _, body, _ in later])


async def test_sends_to_a_deleted_topic_fail_or_go_to_its_re_created_partitions(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    """The test broker re-creates a deleted topic on the producer's next metadata request,
    with its default partition count (1): partition 1 is gone, partition 0 takes records."""
    topic = unique("deleted")
    await create_topic(kafka_bootstrap, topic, 2)
    bindings = {topic: {"producer": {"partition-key": "key", "partition-count": 2}}}
    binder = {"producer": {"request-timeout-ms": 3000}}
    app = StreamApp("refused", config=kafka_config(bindings, binder))
    async with app.run():
        await send_all(app, [(topic, b"before-%s" % k.encode(), k) for k in KEYS])
        await delete_topic(kafka_bootstrap, topic)
        outcomes = await send_all(app, [(topic, b"gone-%d" % n, "a") for n in range(3)])
        later = [(topic, b"p0-%d" % n, "b") for n in range(3)]
        later_outcomes = await send_all(app, later)
        records = await read_topic(kafka_bootstrap, topic, 3, TIMEOUT, 0.5)
    assert later_outcomes == {body: "ok" for _, body, _ in later}
    assert arrived(records) == Counter(body for _, body, _ in later)
    assert set(outcomes.values()) != {"ok"}
    # Once the producer sees the new topic, the message says why it cannot be sent.
    assert outcomes[b"gone-2"] == (
        f"PublishError: publishing to {topic!r}: partition 1 does not exist, the topic has "
        "1 partition(s); check its producer.partition-count"
    )


async def test_a_send_to_a_topic_that_may_not_be_created_fails_alone(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    topic, missing = unique("kept"), unique("missing")
    await create_topic(kafka_bootstrap, topic, 1)
    app = StreamApp("refused", config=kafka_config(binder={"auto-create-topics": False}))
    async with app.run():
        with pytest.raises(BindingError, match=f"{missing!r} does not exist.*auto-create-topics"):
            await app.send(missing, b"lost")
        outcomes = await send_all(app, [(topic, b"kept-%d" % n, "a") for n in range(3)])
        records = await read_topic(kafka_bootstrap, topic, 3, TIMEOUT, 0.5)
    assert outcomes == {b"kept-%d" % n: "ok" for n in range(3)}
    assert arrived(records) == Counter(b"kept-%d" % n for n in range(3))
