"""``streamlib dlq`` on dead letters a Spring Cloud Stream app wrote: shown with Spring's
exception headers, replayed to a streamlib consumer of the same group, the DLQ empty after."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from interop_support import RECEIVE_TIMEOUT, Broker, Order, Spring

from streamlib import Message, StreamApp

pytestmark = [pytest.mark.interop, pytest.mark.anyio]


async def dlq(config: Path, *args: str) -> list[dict[str, Any]]:
    """``streamlib dlq ARGS --config CONFIG --json`` in a subprocess, its JSON lines."""

    def call() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "streamlib", "dlq", *args, "--config", str(config)]
        return subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120)

    done = await asyncio.to_thread(call)
    assert done.returncode == 0, done.stderr + done.stdout
    return [orjson.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


async def test_a_dead_letter_spring_wrote_is_shown_and_replayed_to_a_streamlib_consumer(
    broker: Broker, spring: Spring, unique: Callable[[str], str], tmp_path: Path
) -> None:
    dest, group = unique("interop-replay"), "rg"
    consumer = {"destination": dest, "group": group, "consumer": {"max-attempts": 1, "dlq": True}}
    config = tmp_path / "streamlib.yaml"
    config.write_text(
        yaml.safe_dump(broker.streamlib_config("py-consumer", {"orders-in-0": consumer})),
        encoding="utf-8",
    )
    # Key "k0" goes to partition 1 of 2 (Kafka), which the replay must keep.
    producer_props = {"partition-key": "payload.key", "partition-count": 2}
    producer = StreamApp(
        "py-producer",
        config=broker.streamlib_config(
            "py-producer", {"orders-out-0": {"destination": dest, "producer": producer_props}}
        ),
    )
    async with producer.run():
        await producer.output("orders-out-0")  # provisions the 2-partition topic first
        java = spring.start(
            "failing",
            {
                "spring.cloud.stream.bindings.failing-in-0.destination": dest,
                "spring.cloud.stream.bindings.failing-in-0.group": group,
                "spring.cloud.stream.bindings.failing-in-0.consumer.maxAttempts": 1,
                "spring.cloud.stream.kafka.bindings.failing-in-0.consumer.enableDlq": "true",
                "spring.cloud.stream.rabbit.bindings.failing-in-0.consumer.autoBindDlq": "true",
                "spring.cloud.stream.rabbit.bindings.failing-in-0.consumer.republishToDlq": "true",
            },
        )
        await java.wait_ready()
        for seq in range(2):
            await producer.send("orders-out-0", Order(key="k0", seq=seq, note="py"), key="k0")
        await java.wait_for(lambda r: len(r) >= 2, "2 attempts", RECEIVE_TIMEOUT)
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            while len(letters := await dlq(config, "show", "orders-in-0")) < 2:
                await asyncio.sleep(0.5)
        java.stop()

    assert sorted(orjson.loads(letter["payload"])["seq"] for letter in letters) == [0, 1]
    for letter in letters:
        assert letter["exception"], letter  # Kafka: Spring's fqcn; RabbitMQ: its stack trace
        assert letter["cause"] == "java.lang.IllegalStateException", letter
        assert "refused" in (letter["reason"] or ""), letter
        if broker.name == "kafka":
            assert letter["original"] == dest
            assert letter["position"].startswith("partition 1 ")
        else:
            assert letter["original"] == f"{dest}.{group}"
        assert letter["replay_count"] == 0
    [row] = await dlq(config, "list")
    assert row["count"] == 2 and row["exceptions"] == {letters[0]["exception"]: 2}

    app = StreamApp("py-consumer", config=config)
    received: list[tuple[int, Any, int | None]] = []

    @app.sink
    async def orders(msg: Message[Order]) -> None:
        received.append((msg.payload.seq, msg.headers.get("x-replay-count"), msg.partition))

    async with app.run():
        [done] = await dlq(config, "replay", "orders-in-0")
        assert done["replayed"] == 2
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            while len(received) < 2:
                await asyncio.sleep(0.05)
    partition = 1 if broker.name == "kafka" else None
    assert sorted(received) == [(0, 1, partition), (1, 1, partition)]
    [after] = await dlq(config, "list")
    assert after["count"] == 0
