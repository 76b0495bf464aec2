"""Delivery at volume on RabbitMQ: partitions, dead letters, delayed redelivery."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from pydantic import BaseModel
from rabbit_support import rabbit_app

from streamlib import Message, StreamApp
from streamlib.partitioning import select_partition
from streamlib.testing import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit]

TIMEOUT = 60.0


class Item(BaseModel):
    key: str
    seq: int


async def send_all(app: StreamApp, dest: str, items: list[Item]) -> None:
    """Send pipelined: every message handed over first, then every confirmation awaited."""
    output = await app.output(dest)
    confirms: list[Awaitable[None]] = [await output.send(item) for item in items]
    for confirm in confirms:
        await confirm


async def drain(url: str, queue_name: str, expected: int) -> list[AbstractIncomingMessage]:
    """Every message of ``queue_name``, once ``expected`` are there (plus a moment for extras)."""
    got: list[AbstractIncomingMessage] = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        async with asyncio.timeout(TIMEOUT):
            while len(got) < expected:
                message = await queue.get(no_ack=True, fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                else:
                    got.append(message)
        await asyncio.sleep(0.3)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            got.append(message)
    return got


async def test_partitioned_instances_get_exactly_their_keys_in_order(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    got: list[Collector[tuple[str, int]]] = [Collector(), Collector()]
    apps = []
    for index in (0, 1):
        app = rabbit_app(
            rabbit_url,
            f"part{index}",
            {"take-in-0": {"destination": dest, "group": "g", "consumer": {"partitioned": True}}},
            **{"instance-index": index, "instance-count": 2},
        )

        def bind(c: Collector[tuple[str, int]], a: StreamApp, partition: int) -> None:
            @a.sink
            async def take(msg: Message[Item]) -> None:
                if msg.partition == partition:
                    c.add((msg.payload.key, msg.payload.seq))

        bind(got[index], app, index)
        apps.append(app)
    producer = rabbit_app(
        rabbit_url,
        "producer",
        {dest: {"producer": {"partition-key": "payload.key", "partition-count": 2}}},
    )
    items = [Item(key=f"customer-{n % 97:04d}", seq=n) for n in range(5000)]
    async with apps[0].run(), apps[1].run(), producer.run():
        await send_all(producer, dest, items)
        expected = [
            [(i.key, i.seq) for i in items if select_partition(i.key, 2) == index]
            for index in (0, 1)
        ]
        for index in (0, 1):
            await got[index].wait_for(len(expected[index]), TIMEOUT)
        await asyncio.sleep(0.3)
    assert expected[0] and expected[1]
    for index in (0, 1):
        assert got[index].items == expected[index], f"instance {index}"


async def test_poison_messages_go_to_the_dlq_with_headers_and_good_ones_are_processed(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    good: Collector[int] = Collector()
    consumer = {"dlq": True, "max-attempts": 1}
    app = rabbit_app(
        rabbit_url,
        "poison",
        {"take-in-0": {"destination": dest, "group": "g", "consumer": consumer}},
    )

    @app.sink
    async def take(item: Item) -> None:
        if item.key == "poison":
            raise ValueError(f"poison {item.seq}")
        good.add(item.seq)

    items = [Item(key="poison" if n % 3 == 0 else "ok", seq=n) for n in range(3000)]
    async with app.run():
        await send_all(app, dest, items)
        await good.wait_for(2000, TIMEOUT)
        letters = await drain(rabbit_url, f"{dest}.g.dlq", 1000)
    assert sorted(good.items) == [i.seq for i in items if i.key == "ok"]
    assert len(letters) == 1000
    seqs = []
    for letter in letters:
        item = Item.model_validate_json(letter.body)
        seqs.append(item.seq)
        headers: dict[str, Any] = dict(letter.headers or {})
        assert headers["x-exception-message"] == f"poison {item.seq}"
        assert headers["x-exception-fqcn"] == "builtins.ValueError"
        assert f"poison {item.seq}" in headers["x-exception-stacktrace"]
        assert headers["x-original-exchange"] == dest
        assert headers["x-original-routingKey"] == dest
        assert headers["retry-count"] == 1
        assert letter.content_type == "application/json"
        assert letter.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert letter.routing_key == f"{dest}.g"
    assert sorted(seqs) == [i.seq for i in items if i.key == "poison"]


async def test_without_republish_the_broker_dead_letters(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    consumer = {"dlq": True, "max-attempts": 1, "republish-to-dlq": False}
    app = rabbit_app(
        rabbit_url,
        "broker-dl",
        {"take-in-0": {"destination": dest, "group": "g", "consumer": consumer}},
    )

    @app.sink
    async def take(item: Item) -> None:
        raise ValueError("no")

    async with app.run():
        await app.send(dest, Item(key="k", seq=1))
        [letter] = await drain(rabbit_url, f"{dest}.g.dlq", 1)
    headers: dict[str, Any] = dict(letter.headers or {})
    assert "x-exception-message" not in headers
    [death] = headers["x-death"]
    assert death["queue"] == f"{dest}.g"
    assert death["reason"] == "rejected"


async def test_dlq_ttl_redelivers_a_dead_letter_after_the_delay(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    seen: Collector[tuple[int, str | None]] = Collector()
    consumer = {"dlq": True, "max-attempts": 1, "dlq-ttl": 300}
    app = rabbit_app(
        rabbit_url,
        "delayed",
        {"take-in-0": {"destination": dest, "group": "g", "consumer": consumer}},
    )

    @app.sink
    async def take(msg: Message[Item]) -> None:
        reason = msg.headers.get("x-exception-message")
        seen.add((msg.payload.seq, reason))
        if reason is None:
            raise ValueError("later, please")

    async with app.run():
        await app.send(dest, Item(key="k", seq=1))
        assert await seen.wait_for(2, TIMEOUT) == [(1, None), (1, "later, please")]
        await asyncio.sleep(0.5)
    assert len(seen) == 2


async def test_consumer_recovers_when_its_queue_is_deleted(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    got: Collector[int] = Collector()
    app = rabbit_app(rabbit_url, "deleted", {"take-in-0": {"destination": dest, "group": "g"}})

    @app.sink
    async def take(item: Item) -> None:
        got.add(item.seq)

    async with app.run():
        await app.send(dest, Item(key="k", seq=1))
        await got.wait_for(1, TIMEOUT)
        connection = await aio_pika.connect(rabbit_url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(f"{dest}.g")
            exchange = await channel.get_exchange(dest)
            async with asyncio.timeout(TIMEOUT):
                while len(got) < 2:  # the queue comes back, bound again, consumed again
                    await exchange.publish(aio_pika.Message(b'{"key":"k","seq":2}'), dest)
                    await asyncio.sleep(0.2)
    assert got.items[:2] == [1, 2]


async def test_concurrency_runs_handlers_side_by_side_and_acks_each(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    got: Collector[int] = Collector()
    running = 0
    most = 0
    release = asyncio.Event()
    consumer = {"concurrency": 4}
    app = rabbit_app(
        rabbit_url, "wide", {"take-in-0": {"destination": dest, "group": "g", "consumer": consumer}}
    )

    @app.sink
    async def take(item: Item) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if most == 4:
            release.set()
        await release.wait()
        running -= 1
        got.add(item.seq)

    async with app.run():
        await send_all(app, dest, [Item(key="k", seq=n) for n in range(40)])
        assert sorted(await got.wait_for(40, TIMEOUT)) == list(range(40))
    assert most == 4
    # everything was acknowledged: a new member of the group gets nothing
    leftovers: Collector[int] = Collector()
    app2 = rabbit_app(rabbit_url, "again", {"again-in-0": {"destination": dest, "group": "g"}})

    @app2.sink
    async def again(item: Item) -> None:
        leftovers.add(item.seq)

    async with app2.run():
        await app2.send(dest, Item(key="k", seq=-1))
        assert await leftovers.wait_for(1, TIMEOUT) == [-1]
        await asyncio.sleep(0.3)
    assert leftovers.items == [-1]


async def test_single_active_consumer_delivers_to_one_member_in_order(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    got: Collector[tuple[str, int]] = Collector()
    consumer = {"single-active-consumer": True}
    apps = []
    for name in ("first", "second"):
        app = rabbit_app(
            rabbit_url,
            name,
            {"take-in-0": {"destination": dest, "group": "g", "consumer": consumer}},
        )

        def bind(a: StreamApp, member: str) -> None:
            @a.sink
            async def take(item: Item) -> None:
                got.add((member, item.seq))

        bind(app, name)
        apps.append(app)
    async with apps[0].run(), apps[1].run():
        await send_all(apps[0], dest, [Item(key="k", seq=n) for n in range(200)])
        items = await got.wait_for(200, TIMEOUT)
    assert [seq for _, seq in items] == list(range(200))
    assert len({member for member, _ in items}) == 1


async def test_stop_requeues_prefetched_messages_in_order(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("orders")
    first: Collector[int] = Collector()
    second: Collector[int] = Collector()
    bindings = {"take-in-0": {"destination": dest, "group": "g"}}
    app = rabbit_app(rabbit_url, "first", bindings)

    @app.sink
    async def take(item: Item) -> None:
        first.add(item.seq)
        await asyncio.sleep(0.3)

    producer = rabbit_app(rabbit_url, "producer", {})
    async with producer.run():
        async with app.run():
            await send_all(producer, dest, [Item(key="k", seq=n) for n in range(20)])
            await first.wait_for(1, TIMEOUT)
        handled = first.items
        app2 = rabbit_app(rabbit_url, "second", {"rest-in-0": bindings["take-in-0"]})

        @app2.sink
        async def rest(item: Item) -> None:
            second.add(item.seq)

        async with app2.run():
            await second.wait_for(20 - len(handled), TIMEOUT)
            await asyncio.sleep(0.3)
    assert handled == list(range(len(handled)))
    assert second.items == list(range(len(handled), 20))
