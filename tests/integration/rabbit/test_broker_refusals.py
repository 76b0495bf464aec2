"""The broker says no to an output: each refusal is an outcome of that message, never a loop,
a silent drop or a stall. Per message: how often it was handled, what was dead-lettered (with
the broker's reason) and that the input queue ends empty."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import pytest
from pydantic import BaseModel
from rabbit_support import queue_depth, rabbit_app
from streamlib_rabbit.testing import RabbitHarness
from yarl import URL

from streamlib import StreamApp
from streamlib.testing import Collector
from streamlib.testing.brokers import rabbitmqctl

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
