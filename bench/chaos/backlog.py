"""A large backlog consumed by a slow handler: the consumer's memory must stay flat.

Fills a topic (a queue) with small messages, starts one ``slow_sink`` process that sleeps 1 ms per
message, and prints its resident memory every 10 s for a bounded time. Fails when the last
sample exceeds the first by more than half.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

from .driver import say
from .fleet import REPO
from .sides import BATCH

GROWTH_LIMIT = 1.5
SAMPLE_EVERY = 10.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def fill_kafka(bootstrap: str, topic: str, count: int) -> None:

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 4, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, max_batch_size=262144)
    await producer.start()
    try:
        await _fill(count, lambda body, n: producer.send(topic, body, key=str(n % 64).encode()))
    finally:
        await producer.stop()


async def fill_rabbit(url: str, exchange_name: str, queue_name: str, count: int) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.bind(exchange, "#")

        async def send(body: bytes, n: int) -> Any:
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            return exchange.publish(message, routing_key=exchange_name)

        await _fill(count, send)


async def _fill(count: int, send: Any) -> None:
    t0 = time.monotonic()
    last = t0
    for start in range(0, count, BATCH):
        pending = [
            await send(json.dumps({"n": n}).encode(), n)
            for n in range(start, min(start + BATCH, count))
        ]
        await asyncio.gather(*pending)
        if time.monotonic() - last > 10:
            last = time.monotonic()
            say(f"  produced {start + BATCH} in {last - t0:.0f} s")
    say(f"  produced {count} in {time.monotonic() - t0:.0f} s")


def write_spec(spec: dict[str, Any], logs: Path) -> Path:
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / "backlog.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


async def kafka_handled(bootstrap: str, topic: str) -> int:
    """Records of ``topic`` committed by the backlog group."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets("backlog")
    finally:
        await admin.close()
    return sum(o.offset for tp, o in offsets.items() if tp.topic == topic and o.offset > 0)


async def rabbit_waiting(url: str, queue_name: str) -> int:
    """Messages ready in the backlog queue."""
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        count = queue.declaration_result.message_count
        return int(count or 0)


async def watch(
    spec: dict[str, Any],
    logs: Path,
    seconds: float,
    label: str,
    progress: Callable[[], Awaitable[str]],
) -> bool:
    """Run the slow sink for ``seconds``, sampling its RSS; True when it stayed flat."""
    spec_path = write_spec(spec, logs)
    with (logs / "backlog-sink.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.chaos.slow_sink",
            str(spec_path),
            cwd=REPO,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    samples: list[int] = []
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), SAMPLE_EVERY)
            if proc.returncode is not None:
                say(f"  {label}: the consumer exited with status {proc.returncode}; see {logs}")
                return False
            samples.append(rss_kib(proc.pid))
            elapsed = time.monotonic() - t0
            try:
                done = await asyncio.wait_for(progress(), 10)
            except Exception as exc:
                done = f"progress unknown ({type(exc).__name__})"
            say(f"  {label} {elapsed:5.0f} s  RSS {samples[-1] / 1024:7.1f} MiB  {done}")
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    first, last, peak = samples[0], samples[-1], max(samples)
    ok = last <= first * GROWTH_LIMIT
    say(
        f"  {label}: RSS first {first / 1024:.1f} MiB, last {last / 1024:.1f} MiB, "
        f"peak {peak / 1024:.1f} MiB: {'flat' if ok else 'GREW'} "
        f"(limit: last <= {GROWTH_LIMIT} x first)"
    )
    return ok


async def backlog(brokers: list[str], kafka_count: int, rabbit_count: int, seconds: float) -> bool:
    run_id = secrets.token_hex(4)
    logs = Path("/tmp/streamlib-chaos-logs") / run_id
    ok = True
    if "kafka" in brokers:
        topic = f"chaos-backlog-{run_id}"
        say(f"=== backlog on kafka: {kafka_count} messages into {topic}, 1 ms per message")
        bootstrap = os.environ["STREAMLIB_TEST_KAFKA"]
        await fill_kafka(bootstrap, topic, kafka_count)
        spec = {
            "handler_ms": 1,
            "streamlib": {
                "binders": {"kafka": {"type": "kafka", "bootstrap-servers": bootstrap}},
                "bindings": {"slow-in-0": {"destination": topic, "group": "backlog"}},
            },
        }

        async def kafka_progress() -> str:
            return f"handled {await kafka_handled(bootstrap, topic)} of {kafka_count}"

        ok &= await watch(spec, logs / "kafka", seconds, "kafka", kafka_progress)
    if "rabbit" in brokers:
        exchange = f"chaos-backlog-{run_id}"
        say(
            f"=== backlog on rabbit: {rabbit_count} persistent messages into {exchange}.backlog "
            "(fewer than on Kafka: publishing 1,000,000 persistent messages takes too long here)"
        )
        url = os.environ["STREAMLIB_TEST_RABBIT"]
        queue = f"{exchange}.backlog"
        await fill_rabbit(url, exchange, queue, rabbit_count)
        spec = {
            "handler_ms": 1,
            "streamlib": {
                "binders": {"rabbit": {"type": "rabbit", "url": url}},
                "bindings": {"slow-in-0": {"destination": exchange, "group": "backlog"}},
            },
        }

        async def rabbit_progress() -> str:
            return f"{await rabbit_waiting(url, queue)} of {rabbit_count} waiting"

        ok &= await watch(spec, logs / "rabbit", seconds, "rabbit", rabbit_progress)
    return ok
