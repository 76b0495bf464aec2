"""A consumer stays in its group while its handlers are slow, and a task that dies does not
go unnoticed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from pydantic import BaseModel

from streamlib import StreamApp
from streamlib.testing.collector import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]

Config = Callable[..., dict[str, Any]]

TIMEOUT = 30.0


class Item(BaseModel):
    seq: int


async def test_a_full_buffer_and_a_slow_handler_keep_the_member_in_its_group(
    kafka_config: Config, unique: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    dest = unique("slow")
    bindings = {
        "take-in-0": {
            "destination": dest,
            "group": unique("g"),
            "consumer": {"max-in-flight": 1},
        },
        dest: {"content-type": "application/json"},
    }
    binder = {"consumer": {"max-poll-interval-ms": 1500}}
    app = StreamApp("slow", config=kafka_config(bindings, binder))
    handled: Collector[int] = Collector()

    @app.sink
    async def take(item: Item) -> None:
        handled.add(item.seq)
        if item.seq == 0:
            await asyncio.sleep(2.5)

    caplog.set_level(logging.INFO, logger="aiokafka")
    async with app.run():
        for seq in range(3):
            await app.send(dest, Item(seq=seq))
        assert await handled.wait_for(3, TIMEOUT) == [0, 1, 2]
        left = [r.getMessage() for r in caplog.records if "LeaveGroup" in r.getMessage()]
        health = app.health()["binders"]["kafka"]["bindings"]["take-in-0"]
    assert left == []
    assert health["running"] and health["assigned"] == [0]
    await asyncio.sleep(0)
    assert handled.items == [0, 1, 2]


async def test_a_worker_that_dies_is_reported_and_restarted(
    kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest = unique("crash")
    bindings = {
        "take-in-0": {"destination": dest, "group": unique("g")},
        dest: {"content-type": "application/json"},
    }
    app = StreamApp("crash", config=kafka_config(bindings))
    handled: Collector[int] = Collector()

    @app.sink
    async def take(item: Item) -> None:
        handled.add(item.seq)

    async with app.run():
        # The Kafka binding itself, under the app's handle on it.
        binding: Any = app.binding("take-in-0")._binding  # type: ignore[attr-defined]
        dispatch = binding._dispatch
        raised: list[int] = []

        async def escaping(envelope: Any) -> Any:
            # A dispatcher bug: an exception the core never lets out.
            if b'"seq":1' in envelope.body and not raised:
                raised.append(1)
                raise RuntimeError("dispatcher bug")
            return await dispatch(envelope)

        binding._dispatch = escaping
        for seq in range(3):
            await app.send(dest, Item(seq=seq))
        assert await handled.wait_for(3, TIMEOUT) == [0, 1, 2]
        health = app.health()["binders"]["kafka"]["bindings"]["take-in-0"]
    assert raised == [1]
    assert health["running"]
    assert health["task-failures"] == 1
    assert "dispatcher bug" in health["last-task-failure"]


async def test_a_cancelled_stop_still_closes_the_consumer_and_leaves_the_group(
    kafka_bootstrap: str, kafka_config: Config, unique: Callable[[str], str]
) -> None:
    dest, group = unique("cancel"), unique("g")
    bindings = {
        "take-in-0": {"destination": dest, "group": group},
        dest: {"content-type": "application/json"},
    }
    app = StreamApp("cancel", config=kafka_config(bindings))
    running = asyncio.Event()

    @app.sink
    async def take(item: Item) -> None:
        running.set()
        await asyncio.sleep(3600)

    async with app.run():
        binding: Any = app.binding("take-in-0")
        await app.send(dest, Item(seq=0))
        async with asyncio.timeout(TIMEOUT):
            await running.wait()
        stopping = asyncio.create_task(binding.stop())
        await asyncio.sleep(0.3)  # stop() now waits for the handler
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping
        assert binding.client() is None
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            [described] = await admin.describe_consumer_groups([group])
        finally:
            await admin.close()
    [(_, _, state, _, _, members, *_)] = described.groups
    assert (state, members) == ("Empty", [])
