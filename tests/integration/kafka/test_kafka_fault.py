"""Crash fault trial: one of two group members is SIGKILLed mid-stream; nothing is lost."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from app_process import create_topics, ready, start_app, stop_all

pytestmark = [pytest.mark.anyio, pytest.mark.kafka, pytest.mark.slow]

APP = Path(__file__).with_name("fault_app.py")
MESSAGES = 10_000
KEYS = 40
TIMEOUT = 75.0


def start_instance(bootstrap: str, topic: str, group: str, out: Path) -> subprocess.Popen[bytes]:
    return start_app(APP, bootstrap, topic, group, str(out))


def handled(path: Path) -> list[tuple[int, str, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:  # a line cut by the kill is incomplete
            out.append((int(parts[0]), parts[1], int(parts[2])))
    return out


def check_key_order(key: str, expected: list[int], seen: list[int]) -> None:
    """``seen`` is ``expected`` in order, where a redelivery may only replay from an earlier
    point onwards (never skip ahead)."""
    index = {seq: i for i, seq in enumerate(expected)}
    previous = -1
    for seq in seen:
        i = index[seq]
        assert i <= previous + 1, f"key {key}: {seq} handled before {expected[previous + 1]}"
        previous = max(previous, i) if i == previous + 1 else i
    assert set(seen) == set(expected), f"key {key}: lost {sorted(set(expected) - set(seen))[:5]}"


async def test_killed_member_loses_nothing_and_keeps_order_per_key(
    kafka_bootstrap: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    topic, group = unique("fault"), "workers"
    await create_topics(kafka_bootstrap, {topic: 4})
    files = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_instance(kafka_bootstrap, topic, group, f) for f in files]
    try:
        for proc in procs:
            await ready(proc, "instance")
        expected: dict[str, list[int]] = defaultdict(list)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        await producer.start()
        try:
            futures = []
            for seq in range(MESSAGES):
                key = f"key-{seq % KEYS}"
                expected[key].append(seq)
                body = orjson.dumps({"key": key, "seq": seq})
                futures.append(await producer.send(topic, body, key=key.encode()))
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        victim = procs[0]
        while len(handled(files[0])) < 1000 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        seen_before_kill = len(handled(files[0])) + len(handled(files[1]))
        assert seen_before_kill < MESSAGES, "the kill came after everything was handled"
        while loop.time() < deadline:
            unique_seen = {(k, s) for f in files for _, k, s in handled(f)}
            if len(unique_seen) >= MESSAGES:
                break
            await asyncio.sleep(0.2)
        procs[1].send_signal(signal.SIGTERM)
        await asyncio.to_thread(procs[1].wait, 30)
    finally:
        stop_all(procs)
    events = sorted(e for f in files for e in handled(f))
    by_key: dict[str, list[int]] = defaultdict(list)
    for _, key, seq in events:
        by_key[key].append(seq)
    for key, seqs in expected.items():
        check_key_order(key, seqs, by_key[key])
    duplicates = len(events) - len({(k, s) for _, k, s in events})
    print(f"\nfault trial: {MESSAGES} sent, {len(events)} handled, {duplicates} duplicates")
