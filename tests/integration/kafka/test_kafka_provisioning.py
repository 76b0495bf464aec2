"""Topics are created or grown to the partitions a binding needs, or start-up says why not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from streamlib_kafka.testing import partition_count

from streamlib import BindingError, StreamApp

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]

Config = Callable[..., dict[str, Any]]


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


def consumer_app(config: dict[str, Any]) -> StreamApp:
    app = StreamApp("prov", config=config)

    @app.sink
    async def take(data: bytes) -> None:
        return None

    return app


async def test_consumer_topic_gets_instance_count_times_concurrency_partitions(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("prov")
    bindings = {
        "take-in-0": {
            "destination": dest,
            "group": "g",
            "consumer": {"concurrency": 3, "dlq": True},
        }
    }
    app = consumer_app(kafka_config(bindings, instance_count=2))
    async with app.run():
        pass
    assert await partition_count(kafka_bootstrap, dest) == 6
    assert await partition_count(kafka_bootstrap, f"error.{dest}.g") == 6


async def test_min_partition_count_and_producer_partition_count(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    small, large = unique("prov"), unique("prov")
    bindings = {
        small: {"producer": {"partition-count": 2, "partition-key": "key"}},
        large: {"producer": {"partition-count": 5, "partition-key": "key"}},
    }
    app = StreamApp("prov", config=kafka_config(bindings, {"min-partition-count": 3}))
    async with app.run():
        await app.send(small, b"x", key="a")
        await app.send(large, b"x", key="a")
    assert await partition_count(kafka_bootstrap, small) == 3
    assert await partition_count(kafka_bootstrap, large) == 5


async def test_group_managed_consumer_tolerates_fewer_partitions(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    # As Spring's binder: under group management extra consumers just idle.
    dest = unique("prov")
    await create_topic(kafka_bootstrap, dest, 1)
    bindings = {"take-in-0": {"destination": dest, "group": "g", "consumer": {"concurrency": 4}}}
    app = consumer_app(kafka_config(bindings))
    async with app.run():
        assert app.binding("take-in-0").is_running
    assert await partition_count(kafka_bootstrap, dest) == 1


async def test_too_few_partitions_fail_naming_topic_and_counts(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("prov")
    await create_topic(kafka_bootstrap, dest, 1)
    consumer = {"concurrency": 4, "auto-rebalance": False}
    bindings = {"take-in-0": {"destination": dest, "group": "g", "consumer": consumer}}
    app = consumer_app(kafka_config(bindings))
    with pytest.raises(BindingError) as info:
        async with app.run():
            pass
    message = str(info.value)
    assert dest in message
    assert "1 partition(s)" in message and "4 are required" in message
    assert "auto-add-partitions" in message
    assert await partition_count(kafka_bootstrap, dest) == 1


async def test_auto_add_partitions_grows_the_topic(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("prov")
    await create_topic(kafka_bootstrap, dest, 1)
    bindings = {"take-in-0": {"destination": dest, "group": "g", "consumer": {"concurrency": 4}}}
    app = consumer_app(kafka_config(bindings, {"auto-add-partitions": True}))
    async with app.run():
        pass
    assert await partition_count(kafka_bootstrap, dest) == 4


async def test_auto_create_topics_false_fails_on_a_missing_topic(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("prov")
    bindings = {"take-in-0": {"destination": dest, "group": "g"}}
    app = consumer_app(kafka_config(bindings, {"auto-create-topics": False}))
    with pytest.raises(BindingError, match=f"topic '{dest}' does not exist.*auto-create-topics"):
        async with app.run():
            pass
    assert await partition_count(kafka_bootstrap, dest) == 0
