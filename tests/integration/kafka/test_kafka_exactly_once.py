"""Processors killed mid-stream: a transactional one leaves each input's result exactly once in
the output (as a read_committed reader sees it); a plain one loses none."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from app_process import create_topics, ready, start_app, stop_all
from pydantic import BaseModel
from streamlib_kafka.testing import read_topic

from streamlib import StreamApp
from streamlib.testing.collector import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]

APP = Path(__file__).with_name("eos_app.py")
MESSAGES = 2000
TIMEOUT = 75.0


def start(
    bootstrap: str, source: str, target: str, group: str, *mode: str
) -> subprocess.Popen[bytes]:
    return start_app(APP, bootstrap, source, target, group, *mode)


async def written(bootstrap: str, topic: str) -> int:
    """Records written to ``topic`` so far, committed or not (end offsets, markers too)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(2)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


class Item(BaseModel):
    seq: int


async def relay_with_a_crash(
    bootstrap: str, unique: Callable[[str], str], *mode: str
) -> tuple[list[Any], list[Any]]:
    """Fill an input topic, run the relay processor, SIGKILL it mid-stream, restart it, and
    return the output records a read_committed reader sees and all records in the log."""
    source, target, group = unique("relay-in"), unique("relay-out"), "relay"
    await create_topics(bootstrap, {source: 2, target: 2})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                source, orjson.dumps({"key": f"k{n % 7}", "seq": n}), key=f"k{n % 7}".encode()
            )
            for n in range(MESSAGES)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()

    procs = [start(bootstrap, source, target, group, *mode)]
    try:
        await ready(procs[0], "processor")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while await written(bootstrap, target) < 300 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        procs.append(start(bootstrap, source, target, group, *mode))
        await ready(procs[1], "processor")
        committed = await read_topic(
            bootstrap, target, MESSAGES, TIMEOUT, 1.0, isolation_level="read_committed"
        )
        procs[1].send_signal(signal.SIGTERM)
        await asyncio.to_thread(procs[1].wait, 30)
    finally:
        stop_all(procs)
    everything = await read_topic(bootstrap, target, 0, 0.0, 0.5)
    return committed, everything


@pytest.mark.slow
async def test_killed_transactional_processor_outputs_each_result_once(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    committed, everything = await relay_with_a_crash(kafka_bootstrap, unique)
    seqs = Counter(orjson.loads(r.value)["seq"] for r in committed)
    assert sorted(seqs) == list(range(MESSAGES)), f"missing {set(range(MESSAGES)) - set(seqs)}"
    assert [s for s, n in seqs.items() if n > 1] == []
    print(
        f"\nexactly-once: {MESSAGES} inputs, {len(committed)} committed outputs, "
        f"{len(everything) - len(committed)} aborted records in the log"
    )


@pytest.mark.slow
async def test_killed_processor_loses_no_result(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    committed, _ = await relay_with_a_crash(kafka_bootstrap, unique, "plain")
    seqs = Counter(orjson.loads(r.value)["seq"] for r in committed)
    assert sorted(seqs) == list(range(MESSAGES)), f"missing {set(range(MESSAGES)) - set(seqs)}"
    duplicates = sum(seqs.values()) - len(seqs)
    print(f"\nat-least-once processor: {MESSAGES} inputs, {duplicates} duplicate outputs")


async def test_transactional_consumer_commits_dead_letters_in_its_transaction(
    kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    dest = unique("eos-dlq")
    config = {
        "name": "eos-dlq",
        "binders": {"kafka": {"type": "kafka", "bootstrap-servers": kafka_bootstrap}},
        "bindings": {
            "take-in-0": {
                "destination": dest,
                "group": "g",
                "consumer": {"transactional": True, "dlq": True, "max-attempts": 1},
            }
        },
    }
    app = StreamApp("eos-dlq", config=config)
    good: Collector[int] = Collector()

    @app.sink
    async def take(item: Item) -> None:
        if item.seq % 3 == 0:
            raise ValueError(f"poison {item.seq}")
        good.add(item.seq)

    async with app.run():
        for seq in range(30):
            await app.send(dest, Item(seq=seq))
        assert await good.wait_for(20, TIMEOUT) == [s for s in range(30) if s % 3]
        letters = await read_topic(
            kafka_bootstrap, f"error.{dest}.g", 10, TIMEOUT, 0.5, isolation_level="read_committed"
        )
    assert [orjson.loads(r.value)["seq"] for r in letters] == list(range(0, 30, 3))
