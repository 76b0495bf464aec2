"""Dead letters, health and lag, pause and resume on a real broker."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from pydantic import BaseModel
from streamlib_kafka.testing import read_topic

from streamlib import Message, StreamApp
from streamlib.testing.collector import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]

Config = Callable[..., dict[str, Any]]

TIMEOUT = 60.0


class Item(BaseModel):
    key: str
    seq: int


def lag_of(app: StreamApp, binding: str) -> dict[int, int | None]:
    lag: dict[int, int | None] = app.health()["binders"]["kafka"]["bindings"][binding]["lag"]
    return lag


async def eventually(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_dead_letter_headers_have_spring_byte_formats(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    bindings = {
        "take-in-0": {
            "destination": dest,
            "group": "g",
            "consumer": {"max-attempts": 1, "dlq": True, "concurrency": 2},
        }
    }
    app = StreamApp("dlq", config=kafka_config(bindings, instance_count=2))

    @app.sink
    async def take(item: Item) -> None:
        raise ValueError(f"refused {item.seq}")

    async with app.run():
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            sent = await producer.send_and_wait(
                dest,
                b'{"key":"k","seq":1}',
                key=b"k",
                partition=3,
                headers=[("x-raw", b"\x00\x01")],
            )
        finally:
            await producer.stop()
        [letter] = await read_topic(kafka_bootstrap, f"error.{dest}.g", 1, TIMEOUT, 0.5)
    assert (letter.partition, letter.key, letter.value) == (3, b"k", b'{"key":"k","seq":1}')
    headers = list(letter.headers)
    assert [name for name, _ in headers] == [
        "x-raw",
        "x-original-topic",
        "x-original-partition",
        "x-original-offset",
        "x-original-timestamp",
        "x-original-timestamp-type",
        "x-exception-fqcn",
        "x-exception-message",
        "x-exception-stacktrace",
    ]
    values = dict(headers)
    assert values["x-raw"] == b"\x00\x01"
    assert values["x-original-topic"] == dest.encode()
    assert values["x-original-partition"] == struct.pack(">i", 3)
    assert values["x-original-offset"] == struct.pack(">q", sent.offset)
    assert values["x-original-timestamp"] == struct.pack(">q", sent.timestamp)
    assert values["x-original-timestamp-type"] == b"CreateTime"
    assert values["x-exception-fqcn"] == b"builtins.ValueError"
    assert values["x-exception-message"] == b"refused 1"
    assert b"ValueError: refused 1" in values["x-exception-stacktrace"]


async def test_poison_messages_go_to_the_dlq_and_the_consumer_keeps_going(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    bindings = {
        "take-in-0": {"destination": dest, "group": "g", "consumer": {"dlq": True}},
        dest: {"content-type": "application/json"},
    }
    app = StreamApp("poison", config=kafka_config(bindings))
    good: Collector[int] = Collector()

    @app.sink
    async def take(item: Item) -> None:
        good.add(item.seq)

    async with app.run():
        binding = app.binding("take-in-0")
        expected_good, poison = [], []
        for n in range(2000):
            if n % 2 == 0:
                expected_good.append(n)
                await app.send(dest, Item(key="k", seq=n))
            elif n % 4 == 1:
                poison.append(f"{{not json {n}".encode())
                await app.send(dest, poison[-1])
            else:
                poison.append(b'{"key":"k","seq":"n%d"}' % n)
                await app.send(dest, {"key": "k", "seq": f"n{n}"})
            assert binding.is_running
        assert await good.wait_for(1000, TIMEOUT) == expected_good
        letters = await read_topic(kafka_bootstrap, f"error.{dest}.g", 1000, TIMEOUT, 0.5)
        assert binding.is_running
    assert [letter.value for letter in letters] == poison
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["x-exception-fqcn"] == b"streamlib.errors.MessageConversionError"
        assert headers["x-original-topic"] == dest.encode()
        assert headers["contentType"] == b"application/json"


async def test_health_reports_assignment_and_lag(
    kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    release = asyncio.Event()
    seen: Collector[int] = Collector()
    app = StreamApp("lag", config=kafka_config({"take-in-0": {"destination": dest, "group": "g"}}))

    @app.sink
    async def take(item: Item) -> None:
        seen.add(item.seq)
        await release.wait()

    async with app.run():
        health = app.health()["binders"]["kafka"]
        assert health["status"] == "up"
        assert health["broker"]["reachable"] is True
        assert health["bindings"]["take-in-0"]["assigned"] == [0]
        for seq in range(10):
            await app.send(dest, Item(key="k", seq=seq))
        await seen.wait_for(1, TIMEOUT)
        await eventually(lambda: lag_of(app, "take-in-0") == {0: 10}, "lag 10")
        release.set()
        await seen.wait_for(10, TIMEOUT)
        await eventually(lambda: lag_of(app, "take-in-0") == {0: 0}, "lag 0")


async def test_pause_holds_messages_until_resume(
    kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    got: Collector[int] = Collector()
    app = StreamApp(
        "pause", config=kafka_config({"take-in-0": {"destination": dest, "group": "g"}})
    )

    @app.sink
    async def take(msg: Message[Item]) -> None:
        got.add(msg.payload.seq)

    async with app.run():
        binding = app.binding("take-in-0")
        await app.send(dest, Item(key="k", seq=0))
        await got.wait_for(1, TIMEOUT)
        await binding.pause()
        assert app.health()["binders"]["kafka"]["bindings"]["take-in-0"]["paused"] is True
        for seq in range(1, 51):
            await app.send(dest, Item(key="k", seq=seq))
        await asyncio.sleep(1.0)
        assert got.items == [0]
        await binding.resume()
        assert await got.wait_for(51, TIMEOUT) == list(range(51))
