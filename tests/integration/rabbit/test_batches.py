"""Batch consumption on RabbitMQ: what each ``dispatch_batch`` call got, and per message what
was acked, dead-lettered or delivered again, with a stand-in batch dispatcher."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from batch_support import ScriptedBatches, binder, consumer_spec, item, producer_spec
from pydantic import BaseModel
from rabbit_support import close_connections, rabbit_app
from streamlib_rabbit import RabbitBinder
from test_broker_refusals import publish_with_raw_timestamp

from streamlib.binder import ConfigError

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit]

TIMEOUT = 30.0
BATCH_APP = Path(__file__).with_name("batch_app.py")


class Seq(BaseModel):
    seq: int


@pytest.fixture
async def rabbit(rabbit_url: str, unique: Callable[[str], str]) -> AsyncIterator[RabbitBinder]:
    b = binder(rabbit_url, unique("batches"), **{"reconnect-interval": 0.2})
    yield b
    await b.aclose()


async def publish(rabbit: RabbitBinder, destination: str, seqs: range) -> None:
    producer = await rabbit.bind_producer(producer_spec("feed", destination))
    for confirm in [await producer.send(item(seq)) for seq in seqs]:
        await confirm


async def drain(url: str, queue: str) -> list[int]:
    """The seqs in ``queue``, in queue order, taken off it."""
    seqs: list[int] = []
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            seqs.append(json.loads(message.body)["seq"])
    return seqs


async def left_in(url: str, queue: str) -> int:
    """Messages of ``queue`` not acked, once its consumers are closed (the broker requeued
    what they held unacked)."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        count = q.declaration_result.message_count
        assert count is not None
        return count


async def test_batches_never_exceed_the_size_and_keep_delivery_order(
    rabbit: RabbitBinder, rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("sized")
    dispatch = ScriptedBatches(size=7, wait=0.05)
    spec = consumer_spec("take", dest, **{"batch-size": 7, "auto-startup": False})
    binding = await rabbit.bind_consumer(spec, dispatch)
    await publish(rabbit, dest, range(100))
    await binding.start()
    await dispatch.wait_for(lambda: len(dispatch.handled) >= 100)
    await rabbit.aclose()
    assert await left_in(rabbit_url, f"{dest}.g") == 0
    sizes = [len(batch) for batch in dispatch.batches]
    assert max(sizes) == 7, sizes
    assert dispatch.handled == list(range(100))
    assert dispatch.singles == []


async def test_a_batch_size_above_the_prefetch_fails_start_up_naming_both(
    rabbit: RabbitBinder, unique: Callable[[str], str]
) -> None:
    spec = consumer_spec("big", unique("big"), **{"batch-size": 300, "prefetch": 100})
    with pytest.raises(ConfigError) as caught:
        await rabbit.bind_consumer(spec, ScriptedBatches(size=300))
    assert caught.value.key == "bindings.big.consumer.batch-size"
    assert "prefetch (100)" in caught.value.reason


async def test_the_default_batch_size_is_capped_at_the_prefetch(
    rabbit: RabbitBinder, rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("capped")
    # The default batch-size (500), not set in the binding; a wait so that batches fill.
    dispatch = ScriptedBatches(size=500, wait=0.2)
    spec = consumer_spec("take", dest, **{"prefetch": 10, "auto-startup": False})
    binding = await rabbit.bind_consumer(spec, dispatch)
    await publish(rabbit, dest, range(60))
    await binding.start()
    await dispatch.wait_for(lambda: len(dispatch.handled) >= 60)
    await rabbit.aclose()
    assert await left_in(rabbit_url, f"{dest}.g") == 0
    assert max(len(batch) for batch in dispatch.batches) == 10
    assert dispatch.handled == list(range(60))


async def test_a_partial_failure_acks_the_others_and_dead_letters_the_failed_ones(
    rabbit: RabbitBinder, rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("partial")
    dispatch = ScriptedBatches(size=10, fail={3, 14, 15})
    spec = consumer_spec("take", dest, **{"batch-size": 10, "dlq": True, "auto-startup": False})
    binding = await rabbit.bind_consumer(spec, dispatch)
    await publish(rabbit, dest, range(20))
    await binding.start()
    await dispatch.wait_for(lambda: len(dispatch.handled) >= 20)
    await rabbit.aclose()
    assert await left_in(rabbit_url, f"{dest}.g") == 0
    # Each handed over once: nothing acked is delivered again, no failure retried here.
    assert Counter(dispatch.handled) == Counter(range(20))
    assert dispatch.singles == []
    assert await drain(rabbit_url, f"{dest}.g.dlq") == [3, 14, 15]


async def test_an_unreadable_delivery_is_dead_lettered_alone_and_the_rest_batched(
    rabbit: RabbitBinder, rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("unread")
    dispatch = ScriptedBatches(size=10, wait=0.3)
    spec = consumer_spec("take", dest, **{"batch-size": 10, "dlq": True, "auto-startup": False})
    binding = await rabbit.bind_consumer(spec, dispatch)
    await publish(rabbit, dest, range(3))
    # Year 584556019: the wire can say it, a datetime cannot; not an Envelope.
    await publish_with_raw_timestamp(rabbit_url, dest, b'{"seq": 99}', 0xFFFFFFFFFFFFFF00)
    await publish(rabbit, dest, range(3, 6))
    await binding.start()
    await dispatch.wait_for(lambda: len(dispatch.handled) >= 6 and dispatch.unread)
    await rabbit.aclose()
    assert await left_in(rabbit_url, f"{dest}.g") == 0
    # Seven deliveries taken as one batch; the six readable ones in one call.
    assert dispatch.batches == [list(range(6))]
    assert len(dispatch.unread) == 1
    assert await drain(rabbit_url, f"{dest}.g.dlq") == [99]


async def test_a_rejected_bulk_output_acks_nothing_unconfirmed_and_retries_one_at_a_time(
    rabbit: RabbitBinder, rabbit_url: str, unique: Callable[[str], str]
) -> None:
    source, sink = unique("full-in"), unique("full-out")
    # The output's queue takes 5 messages and refuses (nacks) more.
    full = {"max-length": 5, "overflow": "reject-publish"}
    output = await rabbit.bind_producer(producer_spec("out", sink, **full))
    dispatch = ScriptedBatches(size=8, wait=0.5, output=output)
    consumer: dict[str, Any] = {
        "batch-size": 8,
        "dlq": True,
        "max-attempts": 3,
        "back-off-initial-interval": 0.05,
        "auto-startup": False,
    }
    binding = await rabbit.bind_consumer(consumer_spec("work", source, **consumer), dispatch)
    await publish(rabbit, source, range(8))
    await binding.start()
    # One batch call, then each of the 8 alone twice more (max-attempts 3).
    await dispatch.wait_for(lambda: len(dispatch.singles) >= 16)
    await rabbit.aclose()
    assert await left_in(rabbit_url, f"{source}.g") == 0
    outputs = await drain(rabbit_url, f"{sink}.r")
    letters = await drain(rabbit_url, f"{source}.g.dlq")
    assert dispatch.batches == [list(range(8))]
    # The bulk output was refused in part (3 of 8 nacked): none of the 8 was acked on it;
    # each was handled again alone, in order, and refused by the full queue each time.
    assert dispatch.singles == [seq for seq in range(8) for _ in range(2)]
    assert outputs == [0, 1, 2, 3, 4]
    assert letters == list(range(8))


async def test_stop_while_a_batch_waits_for_more_handles_and_acks_it(
    rabbit: RabbitBinder, rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("stopping")
    dispatch = ScriptedBatches(size=100, wait=60.0)
    spec = consumer_spec("take", dest, **{"batch-size": 100})
    binding = await rabbit.bind_consumer(spec, dispatch)
    await publish(rabbit, dest, range(3))
    await asyncio.sleep(0.3)  # delivered; the batch waits for 97 more
    async with asyncio.timeout(TIMEOUT):
        await binding.stop()
    assert dispatch.batches == [[0, 1, 2]]
    await rabbit.aclose()
    assert await left_in(rabbit_url, f"{dest}.g") == 0


async def test_pause_ends_a_batch_wait_and_resume_batches_what_came_meanwhile(
    rabbit: RabbitBinder, rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("pausing")
    dispatch = ScriptedBatches(size=100, wait=60.0)
    binding = await rabbit.bind_consumer(
        consumer_spec("take", dest, **{"batch-size": 100}), dispatch
    )
    await publish(rabbit, dest, range(3))
    await asyncio.sleep(0.3)  # delivered; the batch waits for 97 more
    async with asyncio.timeout(TIMEOUT):
        await binding.pause()
        await dispatch.wait_for(lambda: len(dispatch.batches) == 1)
    await publish(rabbit, dest, range(3, 6))  # arrive while paused: not delivered
    await asyncio.sleep(0.3)
    assert dispatch.batches == [[0, 1, 2]]
    await binding.resume()
    await asyncio.sleep(0.3)
    async with asyncio.timeout(TIMEOUT):
        await binding.stop()
    assert dispatch.batches == [[0, 1, 2], [3, 4, 5]]
    await rabbit.aclose()
    assert await left_in(rabbit_url, f"{dest}.g") == 0


async def test_a_connection_lost_mid_batch_acks_none_of_it_on_the_new_channel(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest, name = unique("cut"), unique("cutter")
    b = binder(rabbit_url, name, **{"reconnect-interval": 0.2, "connection-name": name})
    try:
        gate = asyncio.Event()
        dispatch = ScriptedBatches(size=20, gate=gate)
        spec = consumer_spec("take", dest, **{"batch-size": 20, "auto-startup": False})
        binding = await b.bind_consumer(spec, dispatch)
        await publish(b, dest, range(60))
        await binding.start()
        await dispatch.wait_for(lambda: len(dispatch.batches) == 1)
        in_hand = dispatch.batches[0]
        assert await asyncio.to_thread(close_connections, f"{name}:consumer") == 1
        await asyncio.sleep(0.5)  # the batch's handler finishes after the reconnection
        gate.set()
        await dispatch.wait_for(lambda: len(dispatch.handled) >= 60 + len(in_hand))
        await b.aclose()
        assert await left_in(rabbit_url, f"{dest}.g") == 0
    finally:
        await b.aclose()
    # The batch in hand was not acked on the new channel: the broker delivered it again.
    assert Counter(dispatch.handled) == Counter([*range(60), *in_hand])


def start_batch_app(url: str, dest: str, log: Path, hang_after: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(BATCH_APP), url, dest, str(log), str(hang_after)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def line_of(proc: subprocess.Popen[bytes], expected: bytes) -> None:
    assert proc.stdout is not None
    async with asyncio.timeout(TIMEOUT):
        line = await asyncio.to_thread(proc.stdout.readline)
    assert line.strip() == expected, f"the batch app printed {line!r}"


def batches_in(log: Path) -> list[list[int]]:
    return [[int(seq) for seq in line.split()] for line in log.read_text().splitlines()]


def covered(before: list[list[int]], after: list[list[int]]) -> bool:
    """Every message handled before or after, and the batch in hand at the kill after."""
    handled_after = {seq for batch in after for seq in batch}
    everything = handled_after.union(*before)
    return everything >= set(range(300)) and set(before[-1]) <= handled_after


async def test_a_consumer_killed_mid_batch_loses_nothing(
    rabbit: RabbitBinder, rabbit_url: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    dest = unique("killed")
    first, second = tmp_path / "first.log", tmp_path / "second.log"
    await rabbit.bind_producer(producer_spec("feed", dest, groups=["g"]))
    await publish(rabbit, dest, range(300))
    victim = start_batch_app(rabbit_url, dest, first, hang_after=3)
    survivor: subprocess.Popen[bytes] | None = None
    try:
        await line_of(victim, b"ready")
        await line_of(victim, b"hang")  # the third batch is in hand, unacked
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        survivor = start_batch_app(rabbit_url, dest, second, hang_after=0)
        await line_of(survivor, b"ready")
        async with asyncio.timeout(TIMEOUT):
            while not covered(batches_in(first), batches_in(second)):
                await asyncio.sleep(0.05)
        assert survivor.stdin is not None
        survivor.stdin.close()
        assert await asyncio.to_thread(survivor.wait, TIMEOUT) == 0
    finally:
        for proc in (victim, survivor):
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        pipe.close()
    await rabbit.aclose()
    assert await left_in(rabbit_url, f"{dest}.g") == 0
    before, after = batches_in(first), batches_in(second)
    assert len(before) == 3
    assert all(len(batch) <= 25 for batch in before + after)
    # Every message handled at least once; the batch in hand when killed (never acked)
    # came again; after the restart each came once.
    assert covered(before, after)
    handled_after = [seq for batch in after for seq in batch]
    assert len(handled_after) == len(set(handled_after))


async def test_an_app_batch_processor_whose_output_is_refused_dead_letters_as_one_at_a_time(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    source, sink = unique("app-in"), unique("app-out")
    consumer = {
        "dlq": True,
        "max-attempts": 3,
        "back-off-initial-interval": 0.05,
        "batch-size": 8,
        "batch-wait-ms": 500,
    }
    full = {"required-groups": ["r"], "max-length": 5, "overflow": "reject-publish"}
    app = rabbit_app(
        rabbit_url,
        unique("app"),
        {
            "work-in-0": {"destination": source, "group": "g", "consumer": consumer},
            "work-out-0": {"destination": sink, "producer": full},
        },
    )
    calls: list[list[int]] = []

    @app.processor
    async def work(items: list[Seq]) -> list[Seq]:
        calls.append([item.seq for item in items])
        return items

    async with app.run():
        await app.send_many(source, [Seq(seq=seq) for seq in range(8)])
        async with asyncio.timeout(TIMEOUT):
            while len(calls) < 17:
                await asyncio.sleep(0.05)
    assert await left_in(rabbit_url, f"{source}.g") == 0
    # One call with all 8; its bulk output was refused in part, so none was acked: each was
    # handled again alone (attempts 2 and 3), refused by the full queue, dead-lettered.
    assert calls == [list(range(8)), *([seq] for seq in range(8) for _ in range(2))]
    assert await drain(rabbit_url, f"{sink}.r") == [0, 1, 2, 3, 4]
    assert await drain(rabbit_url, f"{source}.g.dlq") == list(range(8))
