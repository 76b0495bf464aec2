import asyncio
import threading
from pathlib import Path

import pytest
from pydantic import BaseModel

from streamlib import ConfigError, Message, StreamApp
from streamlib.testing import Collector

pytestmark = pytest.mark.anyio


class Order(BaseModel):
    id: int
    customer: str


def _app(name: str, bindings: dict[str, object]) -> StreamApp:
    return StreamApp(name, config={"bindings": bindings})


async def test_sync_handlers_run_off_the_event_loop() -> None:
    threads: Collector[str] = Collector()
    app = _app("sync", {"take-in-0": {"destination": "sync-orders", "group": "g"}})

    loop = asyncio.get_running_loop()

    @app.sink
    def take(order: Order) -> None:
        loop.call_soon_threadsafe(threads.add, threading.current_thread().name)

    async with app.run():
        await app.send("sync-orders", Order(id=1, customer="c"))
        [name] = await threads.wait_for(1, 5)
    assert name != threading.current_thread().name


async def test_returned_message_sets_destination_headers_and_key() -> None:
    got: Collector[Message[Order]] = Collector()
    app = _app(
        "route",
        {
            "route-in-0": {"destination": "route-in", "group": "g"},
            "vip-in-0": {"destination": "route-vip", "group": "g"},
        },
    )

    @app.processor
    async def route(order: Order) -> Message[Order]:
        return Message(
            order, headers={"x-tier": "vip"}, key=order.customer, destination="route-vip"
        )

    @app.sink
    async def vip(msg: Message[Order]) -> None:
        got.add(msg)

    async with app.run():
        await app.send("route-in", Order(id=7, customer="c-7"))
        [msg] = await got.wait_for(1, 5)
    assert msg.payload == Order(id=7, customer="c-7")
    assert msg.headers["x-tier"] == "vip"
    assert msg.key == b"c-7"


async def test_source_polls_and_sends_results() -> None:
    got: Collector[int] = Collector()
    app = _app(
        "poll",
        {
            "count-out-0": {"destination": "counts"},
            "take-in-0": {"destination": "counts", "group": "g"},
        },
    )
    numbers = iter(range(100))

    @app.source(interval=0.01)
    async def count() -> int | None:
        n = next(numbers)
        return None if n % 2 else n

    @app.sink
    async def take(n: int) -> None:
        got.add(n)

    async with app.run():
        assert (await got.wait_for(3, 5))[:3] == [0, 2, 4]


async def test_a_handler_needs_one_argument() -> None:
    app = StreamApp("bad")
    with pytest.raises(ConfigError, match="exactly one argument"):

        @app.sink
        async def take(a: int, b: int) -> None: ...


async def test_partitioned_output_without_a_key_is_an_error_naming_the_binding(
    tmp_path: Path,
) -> None:
    app = _app("nokey", {"parts": {"producer": {"partition-count": 3}}})
    async with app.run():
        with pytest.raises(
            Exception, match="'parts' is partitioned but the message has no partition key"
        ):
            await app.send("parts", {"a": 1})
        await app.send("parts", {"a": 1}, key="k")


async def test_health_reports_bindings() -> None:
    app = _app("health", {"take-in-0": {"destination": "health-d", "group": "g"}})

    @app.sink
    async def take(data: bytes) -> None: ...

    async with app.run():
        health = app.health()
    assert health["status"] == "up"
    assert health["bindings"] == {"take-in-0": "running"}
    assert app.health()["status"] == "down"
    await asyncio.sleep(0)
