"""Partitions, workers and positions: concurrency, static assignment, offset reset, restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from streamlib import Message, StreamApp
from streamlib.testing.collector import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]

Config = Callable[..., dict[str, Any]]

TIMEOUT = 60.0


class Item(BaseModel):
    key: str
    seq: int


def producer_bindings(dest: str, partitions: int) -> dict[str, Any]:
    return {dest: {"producer": {"partition-key": "payload.key", "partition-count": partitions}}}


async def test_concurrency_handles_partitions_in_parallel_and_each_in_order(
    kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    got: Collector[tuple[int, str, int]] = Collector()
    active: set[int] = set()
    overlapping: list[int] = []
    all_busy = asyncio.Event()
    bindings = {
        "take-in-0": {"destination": dest, "group": "g", "consumer": {"concurrency": 4}},
        **producer_bindings(dest, 4),
    }
    app = StreamApp("conc", config=kafka_config(bindings))

    @app.sink
    async def take(msg: Message[Item]) -> None:
        partition = -1 if msg.partition is None else msg.partition
        if partition in active:
            overlapping.append(partition)
        active.add(partition)
        if len(active) == 4:
            all_busy.set()
        # Each partition's first message waits until all four are in a handler at once,
        # which only happens when partitions are handled in parallel.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TIMEOUT):
                await all_busy.wait()
        await asyncio.sleep(0)
        active.discard(partition)
        got.add((partition, msg.payload.key, msg.payload.seq))

    keys = [f"customer-{n}" for n in range(16)]
    async with app.run():
        for seq in range(400):
            await app.send(dest, Item(key=keys[seq % len(keys)], seq=seq))
        await got.wait_for(400, TIMEOUT)
    assert all_busy.is_set(), "partitions were not handled in parallel"
    assert overlapping == [], "two messages of one partition were handled at once"
    for key in keys:
        seqs = [s for _, k, s in got.items if k == key]
        assert seqs == sorted(seqs), f"key {key} out of order"
    assert len({p for p, _, _ in got.items}) == 4


async def test_auto_rebalance_off_takes_partitions_by_instance_index(
    kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    got: list[Collector[int]] = [Collector(), Collector()]
    consumer = {"auto-rebalance": False}
    apps = []
    for index in (0, 1):
        bindings = {"take-in-0": {"destination": dest, "group": "g", "consumer": consumer}}
        app = StreamApp(
            f"static{index}",
            config=kafka_config(
                bindings, instance_index=index, instance_count=2, binder={"min-partition-count": 4}
            ),
        )

        def bind(a: StreamApp, c: Collector[int]) -> None:
            @a.sink
            async def take(msg: Message[Item]) -> None:
                assert msg.partition is not None
                c.add(msg.partition)

        bind(app, got[index])
        apps.append(app)
    sender = StreamApp("sender", config=kafka_config(producer_bindings(dest, 4)))
    async with apps[0].run(), apps[1].run(), sender.run():
        health = apps[1].health()["binders"]["kafka"]["bindings"]["take-in-0"]
        assert health["assigned"] == [1, 3]
        for seq in range(40):
            await sender.send(dest, Item(key=f"k{seq}", seq=seq))
        async with asyncio.timeout(TIMEOUT):
            while len(got[0]) + len(got[1]) < 40:
                await asyncio.sleep(0.05)
    assert set(got[0].items) <= {0, 2} and set(got[1].items) <= {1, 3}


async def test_reset_offsets_rereads_from_the_start_offset(
    kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    got: Collector[int] = Collector()

    def build(reset: bool) -> StreamApp:
        consumer = {"reset-offsets": reset, "start-offset": "earliest"}
        app = StreamApp(
            "reset",
            config=kafka_config(
                {"take-in-0": {"destination": dest, "group": "g", "consumer": consumer}}
            ),
        )

        @app.sink
        async def take(item: Item) -> None:
            got.add(item.seq)

        return app

    first = build(reset=False)
    async with first.run():
        for seq in range(5):
            await first.send(dest, Item(key="k", seq=seq))
        await got.wait_for(5, TIMEOUT)
    async with build(reset=True).run():
        assert await got.wait_for(10, TIMEOUT) == [0, 1, 2, 3, 4] * 2


async def test_a_stopped_binding_starts_again_where_it_left_off(
    kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    got: Collector[int] = Collector()
    app = StreamApp(
        "restart", config=kafka_config({"take-in-0": {"destination": dest, "group": "g"}})
    )

    @app.sink
    async def take(item: Item) -> None:
        got.add(item.seq)

    async with app.run():
        binding = app.binding("take-in-0")
        await app.send(dest, Item(key="k", seq=0))
        await got.wait_for(1, TIMEOUT)
        await binding.stop()
        assert not binding.is_running
        await app.send(dest, Item(key="k", seq=1))
        await binding.start()
        assert binding.is_running
        assert await got.wait_for(2, TIMEOUT) == [0, 1]
