"""Network faults while handlers run: every message is handled, none is acknowledged unhandled."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from faults.proxy import FaultProxy
from pydantic import BaseModel
from rabbit_support import close_connections, queue_depth, rabbit_app, through
from yarl import URL

from streamlib import Message, StreamApp

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit]

TIMEOUT = 60.0
COUNT = 400
GATE = 130
"""The message whose handler runs when the connection drops: the default prefetch (250)
acks in batches of 125, so 125 acks went out before it and 250 deliveries follow."""


class Item(BaseModel):
    seq: int


async def send_all(app: StreamApp, dest: str, seqs: range) -> None:
    output = await app.output(dest)
    confirms: list[Awaitable[None]] = [await output.send(Item(seq=n)) for n in seqs]
    for confirm in confirms:
        await confirm


async def wait_all_handled_or_queue_empty(
    handled: set[int], expected: set[int], queue: str
) -> None:
    """Wait until every message was handled, or the broker holds none of the queue's
    messages any more (what is missing then was acknowledged without being handled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not expected <= handled and loop.time() < deadline:
        if await asyncio.to_thread(queue_depth, queue) == 0:
            await asyncio.sleep(1.0)  # acknowledged ones still in the client's buffer
            return
        await asyncio.sleep(0.2)


@pytest.mark.parametrize(
    ("fault", "concurrency"),
    [("proxy-cut", 1), ("broker-close", 1), ("proxy-cut", 4), ("blackhole", 1)],
)
async def test_connection_lost_while_handlers_run_loses_nothing(
    rabbit_url: str, unique: Callable[[str], str], fault: str, concurrency: int
) -> None:
    dest = unique("cut")
    name = unique("cutter")
    queue = f"{dest}.g"
    expected = set(range(COUNT))
    handled: set[int] = set()
    url = URL(rabbit_url)
    async with FaultProxy(url.host or "127.0.0.1", url.port or 5672) as proxy:
        # Latency widens the moment between consuming again and the first redelivery.
        proxy.latency = 0.05
        binder: dict[str, Any] = {
            "type": "rabbit",
            "url": through(rabbit_url, proxy.port),
            "connection-name": name,
            "reconnect-interval": 0.2,
            "heartbeat": 1,
        }
        app = StreamApp(
            name,
            config={
                "name": name,
                "binders": {"rabbit": binder},
                "bindings": {
                    "take-in-0": {
                        "destination": dest,
                        "group": "g",
                        "consumer": {"concurrency": concurrency},
                    }
                },
            },
        )

        at_gate, cut_done = asyncio.Event(), asyncio.Event()

        @app.sink
        async def take(msg: Message[Item]) -> None:
            if msg.payload.seq == GATE and not cut_done.is_set():
                # The connection drops while this handler runs, just after a batched ack.
                at_gate.set()
                await cut_done.wait()
            await asyncio.sleep(0.02)
            handled.add(msg.payload.seq)

        feeder = rabbit_app(rabbit_url, unique("feeder"), {})
        async with app.run(), feeder.run():
            await send_all(feeder, dest, range(COUNT))
            await asyncio.wait_for(at_gate.wait(), TIMEOUT)
            if fault == "proxy-cut":
                assert proxy.cut() == 1
            elif fault == "broker-close":
                assert await asyncio.to_thread(close_connections, name) == 1
            else:
                # Nothing gets through until the client misses the broker's heartbeats and
                # drops the connection; its next attempt finds the network back.
                proxy.blackhole = True
                async with asyncio.timeout(TIMEOUT):
                    while proxy.open_connections:
                        await asyncio.sleep(0.01)
                proxy.blackhole = False
            cut_done.set()
            await wait_all_handled_or_queue_empty(handled, expected, queue)
            missing = sorted(expected - handled)
            assert not missing, f"{len(missing)} of {COUNT} acknowledged, never handled: {missing}"
            loop = asyncio.get_running_loop()
            deadline = loop.time() + TIMEOUT
            while await asyncio.to_thread(queue_depth, queue) and loop.time() < deadline:
                await asyncio.sleep(0.2)
            assert await asyncio.to_thread(queue_depth, queue) == 0
