"""The broker says no to an output, or a delivery cannot be read: each is an outcome of that
message, never a loop, a silent drop or a stall. Per message: how often it was handled, what
was dead-lettered (with the reason) and that the input queue ends empty."""

from __future__ import annotations

import asyncio
import datetime
import json
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import aiormq
import pytest
from aiormq.abc import ChannelFrame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.frame import marshal as marshal_frame
from pamqp.header import ContentHeader
from pydantic import BaseModel
from rabbit_support import queue_depth, rabbit_app
from streamlib_rabbit.testing import RabbitHarness
from support.launcher import rabbitmqctl
from yarl import URL

from streamlib import StreamApp
from streamlib.testing import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit]

TIMEOUT = 30.0


class Item(BaseModel):
    seq: int


def processor(
    url: str, name: str, source: str, sink: str, **consumer: Any
) -> tuple[StreamApp, Counter[int]]:
    """A processor ``source`` -> ``sink`` with a DLQ that counts how often it handled each
    message; the output's queue ``<sink>.r`` is declared (required group) but not consumed."""
    app = rabbit_app(
        url,
        name,
        {
            "work-in-0": {
                "destination": source,
                "group": "g",
                "consumer": {
                    "dlq": True,
                    "max-attempts": 3,
                    "back-off-initial-interval": 0.05,
                    **consumer,
                },
            },
            "work-out-0": {"destination": sink, "producer": {"required-groups": ["r"]}},
        },
    )
    handled: Counter[int] = Counter()

    @app.processor
    async def work(item: Item) -> Item:
        handled[item.seq] += 1
        return item

    return app, handled


async def read_all(url: str, queue: str) -> list[int]:
    """The seqs in ``queue``, taken off it."""
    seqs: list[int] = []
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            seqs.append(Item.model_validate_json(message.body).seq)
    return seqs


@pytest.fixture
async def harness(rabbit_url: str) -> AsyncIterator[RabbitHarness]:
    h = RabbitHarness(rabbit_url)
    yield h
    await h.aclose()


async def test_outputs_refused_by_a_full_queue_are_retried_then_dead_lettered(
    rabbit_url: str, unique: Callable[[str], str], harness: RabbitHarness
) -> None:
    source, sink = unique("full-in"), unique("full-out")
    policy = unique("full")
    rabbitmqctl(
        "set_policy",
        "--apply-to",
        "queues",
        policy,
        f"^{sink}\\.r$",
        json.dumps({"max-length": 5, "overflow": "reject-publish"}),
    )
    try:
        app, handled = processor(rabbit_url, unique("full"), source, sink)
        async with app.run():
            for seq in range(8):
                await app.send(source, Item(seq=seq))
            letters = await harness.dead_letters(source, "g", 3)
            assert queue_depth(f"{source}.g") == 0
        assert sorted(await read_all(rabbit_url, f"{sink}.r")) == [0, 1, 2, 3, 4]
    finally:
        rabbitmqctl("clear_policy", policy)
    # The queue is full from the sixth output on: each of those is nacked, handled 3 times
    # (max-attempts), then dead-lettered with the reason.
    assert handled == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 3, 6: 3, 7: 3}
    assert sorted(Item.model_validate_json(letter.body).seq for letter in letters) == [5, 6, 7]
    for letter in letters:
        assert "did not accept" in letter.headers["x-exception-message"]


async def test_an_output_exchange_deleted_while_running_fails_that_message_only(
    rabbit_url: str, unique: Callable[[str], str], harness: RabbitHarness
) -> None:
    source, sink = unique("gone-in"), unique("gone-out")
    app, handled = processor(rabbit_url, unique("gone"), source, sink)
    async with app.run():
        await app.send(source, Item(seq=1))
        await harness_wait(lambda: handled[1] == 1)
        async with await aio_pika.connect(rabbit_url) as connection:
            channel = await connection.channel()
            await channel.exchange_delete(sink)
            await app.send(source, Item(seq=2))
            letters = await harness.dead_letters(source, "g", 1)
            # The publisher's channel, closed by the refusal, comes back and declares the
            # exchange again: later outputs go through (the queue needs binding again).
            queue = await channel.declare_queue(f"{sink}.r", durable=True, passive=True)
            await queue.bind(await channel.get_exchange(sink), "#")
            await app.send(source, Item(seq=3))
            await harness_wait(lambda: handled[3] >= 1)
            await harness_wait(lambda: queue_depth(f"{source}.g") == 0)
    assert [Item.model_validate_json(letter.body).seq for letter in letters] == [2]
    assert "NOT_FOUND - no exchange" in letters[0].headers["x-exception-message"]
    assert await read_all(rabbit_url, f"{sink}.r") == [1, 3]


async def test_an_output_the_user_may_not_write_fails_with_the_brokers_reason(
    rabbit_url: str, unique: Callable[[str], str], harness: RabbitHarness
) -> None:
    source, sink = unique("denied-in"), unique("denied-out")
    user, password = unique("writer"), "pw"
    rabbitmqctl("add_user", user, password)
    try:
        # Everything but writing to the output's exchange.
        rabbitmqctl("set_permissions", "-p", "/", user, ".*", f"^(?!{sink}$).*", ".*")
        url = str(URL(rabbit_url).with_user(user).with_password(password))
        setup, _ = processor(rabbit_url, unique("setup"), source, sink)
        async with setup.run():
            pass  # declares the exchanges and queues as the admin user
        app, handled = processor(url, unique("denied"), source, sink)
        async with app.run():
            await app.send(source, Item(seq=1))
            letters = await harness.dead_letters(source, "g", 1)
            await harness_wait(lambda: queue_depth(f"{source}.g") == 0)
    finally:
        rabbitmqctl("delete_user", user)
    assert handled == {1: 1}  # access refused is not retried
    assert [Item.model_validate_json(letter.body).seq for letter in letters] == [1]
    assert "ACCESS_REFUSED" in letters[0].headers["x-exception-message"]


async def test_order_holds_while_outputs_are_refused_and_retried(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    source, sink = unique("order-in"), unique("order-out")
    policy = unique("order")
    rabbitmqctl(
        "set_policy",
        "--apply-to",
        "queues",
        policy,
        f"^{sink}\\.r$",
        json.dumps({"max-length": 2, "overflow": "reject-publish"}),
    )
    try:
        app, handled = processor(
            rabbit_url, unique("order"), source, sink, **{"max-attempts": 1000}
        )
        reader = rabbit_app(
            rabbit_url,
            unique("reader"),
            {"take-in-0": {"destination": sink, "group": "r", "consumer": {"prefetch": 1}}},
        )
        got: Collector[int] = Collector()

        @reader.sink
        async def take(item: Item) -> None:
            await asyncio.sleep(0.01)  # slower than the processor: the queue fills up
            got.add(item.seq)

        async with reader.run(), app.run():
            output = await app.output(source)
            for confirm in [await output.send(Item(seq=seq)) for seq in range(100)]:
                await confirm
            await got.wait_for(100, TIMEOUT)
    finally:
        rabbitmqctl("clear_policy", policy)
    refused = sum(n - 1 for n in handled.values())
    out_of_order = sum(1 for a, b in zip(got.items, got.items[1:], strict=False) if b < a)
    assert refused > 0, "the queue never refused an output"
    assert out_of_order == 0, f"{out_of_order} out of order after {refused} refusals"
    assert got.items == list(range(100))


async def harness_wait(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not await asyncio.to_thread(condition):
            await asyncio.sleep(0.05)


async def publish_with_raw_timestamp(url: str, exchange: str, body: bytes, stamp: int) -> None:
    """Publish ``body`` with an AMQP timestamp of ``stamp`` seconds, whatever its range (a
    datetime cannot hold every value the wire can, so the frame is patched)."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        raw = await channel.get_underlay_channel()
        assert isinstance(raw, aiormq.Channel)
        placeholder = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        props = Basic.Properties(content_type="application/json", timestamp=placeholder)
        header = marshal_frame(ContentHeader(0, len(body), props), raw.number)
        header = header.replace(
            struct.pack(">Q", int(placeholder.timestamp())), struct.pack(">Q", stamp)
        )
        publish = marshal_frame(Basic.Publish(exchange=exchange, routing_key=exchange), raw.number)
        frames = publish + header + marshal_frame(ContentBody(body), raw.number)
        await raw.connection.write_queue.put(ChannelFrame(payload=frames, should_close=False))
        await channel.declare_exchange(exchange, passive=True)  # a round trip: it was sent


async def test_a_timestamp_the_client_cannot_decode_fails_that_message_only(
    rabbit_url: str, unique: Callable[[str], str], harness: RabbitHarness
) -> None:
    dest = unique("stamp")
    app = rabbit_app(
        rabbit_url,
        unique("stamp"),
        {"take-in-0": {"destination": dest, "group": "g", "consumer": {"dlq": True}}},
    )
    got: Collector[int] = Collector()

    @app.sink
    async def take(item: Item) -> None:
        got.add(item.seq)

    async with app.run():
        # Year 584556019: the wire can say it, a datetime cannot.
        await publish_with_raw_timestamp(rabbit_url, dest, b'{"seq": 1}', 0xFFFFFFFFFFFFFF00)
        await app.send(dest, Item(seq=2))
        assert await got.wait_for(1, TIMEOUT) == [2]
        letters = await harness.dead_letters(dest, "g", 1)
        await harness_wait(lambda: queue_depth(f"{dest}.g") == 0)
        assert app.health()["binders"]["rabbit"]["connections"]["consumer"] == "up"
    assert [Item.model_validate_json(letter.body).seq for letter in letters] == [1]
    assert "timestamp" in letters[0].headers["x-exception-message"]
