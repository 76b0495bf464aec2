"""Records the binder cannot read as the producer meant: a null header value typed by
``spring_json_header_types`` reads as None, and a record that cannot become a message at
all is a failure of that message (dead-lettered or logged); the partition goes on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
import streamlib_kafka.consumer
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from streamlib_kafka.testing import read_topic

from streamlib import Message, StreamApp
from streamlib.testing.collector import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]

Config = Callable[..., dict[str, Any]]

TIMEOUT = 30.0


async def produce(bootstrap: str, topic: str, records: list[tuple[int, list[Any]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for seq, headers in records:
            await producer.send_and_wait(
                topic, orjson.dumps({"seq": seq}), partition=0, headers=headers
            )
    finally:
        await producer.stop()


def typed(**types: str) -> tuple[str, bytes]:
    return ("spring_json_header_types", orjson.dumps(types))


async def test_a_null_header_typed_by_spring_reads_as_none(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("odd")
    bindings = {"take-in-0": {"destination": dest, "group": unique("g")}}
    app = StreamApp("odd", config=kafka_config(bindings))
    got: Collector[tuple[int, Any]] = Collector()

    @app.sink
    async def take(msg: Message[dict[str, int]]) -> None:
        got.add((msg.payload["seq"], msg.headers.get("h", "absent")))

    async with app.run():
        await produce(
            kafka_bootstrap,
            dest,
            [
                (0, [("h", b"text"), typed(h="java.lang.String")]),
                (1, [("h", None), typed(h="java.lang.String")]),
                (2, []),
                (3, [("h", None), typed(h="java.lang.Integer")]),
                (4, [("h", b"7"), typed(h="java.lang.Integer")]),
            ],
        )
        items = await got.wait_for(5, TIMEOUT)
        assert app.health()["binders"]["kafka"]["bindings"]["take-in-0"]["running"]
    assert items == [(0, "text"), (1, None), (2, "absent"), (3, None), (4, 7)]


async def test_a_record_that_cannot_become_a_message_is_dead_lettered(
    kafka_bootstrap: str,
    kafka_config: Config,
    unique: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decode = streamlib_kafka.consumer.decode_headers

    def decode_or_fail(raw: Any) -> dict[str, Any]:
        if any(name == "x-unreadable" for name, _ in raw or ()):
            raise ValueError("header x-unreadable cannot be read")
        return decode(raw)

    monkeypatch.setattr(streamlib_kafka.consumer, "decode_headers", decode_or_fail)
    dest, group = unique("unreadable"), unique("g")
    bindings = {"take-in-0": {"destination": dest, "group": group, "consumer": {"dlq": True}}}
    app = StreamApp("unreadable", config=kafka_config(bindings))
    got: Collector[int] = Collector()

    @app.sink
    async def take(item: dict[str, int]) -> None:
        got.add(item["seq"])

    async with app.run():
        await produce(kafka_bootstrap, dest, [(0, []), (1, [("x-unreadable", b"?")]), (2, [])])
        assert await got.wait_for(2, TIMEOUT) == [0, 2]
        letters = await read_topic(kafka_bootstrap, f"error.{dest}.{group}", 1, TIMEOUT, 0.5)
    [letter] = letters
    assert orjson.loads(letter.value) == {"seq": 1}
    headers = dict(letter.headers)
    assert headers["x-exception-fqcn"] == b"builtins.ValueError"
    assert headers["x-exception-message"] == b"header x-unreadable cannot be read"
