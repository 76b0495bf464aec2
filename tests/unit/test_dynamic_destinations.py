"""app.send to any destination: a bounded cache of bound producers, closed when evicted."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable

import pytest
from tracking_binder import TYPE, TrackingBinder

from streamlib import StreamApp
from streamlib.memory import memory_broker

pytestmark = pytest.mark.anyio


async def test_dynamic_destinations_past_the_cache_size_are_closed_and_lose_nothing() -> None:
    namespace = uuid.uuid4().hex
    before = len(TrackingBinder.instances)
    app = StreamApp(
        "dynamic",
        config={
            "binders": {"t": {"type": TYPE, "namespace": namespace}},
            "bindings": {
                "relay-in-0": {"destination": "dyn-in", "group": "g"},
                "relay-out-0": {"destination": "dyn-relayed"},
            },
        },
    )

    @app.processor
    async def relay(data: bytes) -> bytes:
        return data

    broker = memory_broker(namespace)
    destinations = [f"dyn-{i}" for i in range(30)]
    queues = {d: broker.declare(d, f"{d}.tap", None, False) for d in destinations}
    async with app.run():
        [binder] = TrackingBinder.instances[before:]
        confirms: list[Awaitable[None]] = []
        for round_ in range(2):
            for d in destinations:
                # Pipelined: the confirmations are awaited only at the end, so producers are
                # evicted while their messages are still unconfirmed.
                output = await app.output(d)
                confirms.append(await output.send(f"{d}:{round_}".encode()))
            await app.send("dyn-in", f"relay {round_}".encode())
        for confirm in confirms:
            await confirm
        dynamic = [p for p in binder.producers if p.destination != "dyn-relayed"]
        dynamic_open = [p for p in dynamic if not p.closed]
        assert len(dynamic_open) <= 10
        assert len(dynamic) > 30  # evicted destinations were bound again on their next use
        # The handler's own output binding is never evicted.
        [relayed] = [p for p in binder.producers if p.destination == "dyn-relayed"]
        assert not relayed.closed
        assert binder.most_open["all"] <= 10 + 1  # dynamic ones + relay-out-0
    assert binder.open_producers() == []
    assert all(p.sent_after_close == 0 for p in binder.producers)
    for d in destinations:
        assert [e.body for e in queues[d].items] == [f"{d}:0".encode(), f"{d}:1".encode()]


async def test_dynamic_destination_cache_size_is_a_setting() -> None:
    namespace = uuid.uuid4().hex
    before = len(TrackingBinder.instances)
    app = StreamApp(
        "dynamic-size",
        config={
            "dynamic-destination-cache-size": 2,
            "binders": {"t": {"type": TYPE, "namespace": namespace}},
        },
    )
    async with app.run():
        for i in range(5):
            await app.send(f"size-{i}", b"x")
        [binder] = TrackingBinder.instances[before:]
        assert [p.destination for p in binder.open_producers()] == ["size-3", "size-4"]
        await app.send("size-3", b"y")
        await app.send("size-0", b"z")  # evicts size-4, the least recently used
        assert [p.destination for p in binder.open_producers()] == ["size-3", "size-0"]
