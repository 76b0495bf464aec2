"""A RabbitMQ restart in the middle of a stream: nothing confirmed is lost, the app goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
import pytest
from pydantic import BaseModel
from rabbit_support import ConfirmTally, rabbit_app
from support.launcher import broker_ctl

from streamlib.testing import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit, pytest.mark.slow]

BATCH = 100
AFTER_RESTART = 2000
TIMEOUT = 60.0


class Item(BaseModel):
    seq: int


async def test_restart_mid_stream_loses_no_confirmed_message(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("restart")
    got: Collector[int] = Collector()
    consumer = rabbit_app(
        rabbit_url, "consumer", {"take-in-0": {"destination": dest, "group": "g"}}
    )

    @consumer.sink
    async def take(item: Item) -> None:
        got.add(item.seq)

    producer = rabbit_app(rabbit_url, "producer", {})
    tally = ConfirmTally(producer, dest, lambda seq: Item(seq=seq))
    publish = tally.publish
    health: list[str] = []

    async def watch_health() -> None:
        while True:
            health.append(consumer.health()["binders"]["rabbit"]["status"])
            await asyncio.sleep(0.05)

    async with consumer.run(), producer.run():
        watcher = asyncio.create_task(watch_health())
        seq = 0
        restart: asyncio.Task[str] | None = None
        restarted_at: int | None = None
        while restarted_at is None or seq < restarted_at + AFTER_RESTART:
            await publish(range(seq, seq + BATCH))
            seq += BATCH
            if restart is None and seq >= 1000:
                restart = asyncio.create_task(asyncio.to_thread(broker_ctl, "restart", "rabbit"))
            if restart is not None and restart.done() and restarted_at is None:
                restart.result()
                restarted_at = seq
            await asyncio.sleep(0.02)
        await tally.resend_failed()
        total = seq
        assert tally.confirmed == set(range(total))
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while set(got.items) != tally.confirmed and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        lost = tally.confirmed - set(got.items)
        assert not lost, f"{len(lost)} confirmed messages lost"
        await producer.send(dest, Item(seq=-1))
        # Late redeliveries of earlier messages may still arrive first: wait for this one.
        with anyio.fail_after(TIMEOUT):
            while -1 not in got.items:
                await got.wait_for(len(got) + 1, TIMEOUT)
        assert consumer.health()["binders"]["rabbit"]["status"] == "up"
        watcher.cancel()
    duplicates = len(got.items) - len(set(got.items))
    print(f"sent {total}, duplicates {duplicates}, health seen {sorted(set(health))}")
