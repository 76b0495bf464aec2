"""Dead letters the broker would refuse or lose: headers trimmed to the frame limit, writes
confirmed before the original is acked, never an endless loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aio_pika
import pytest
from pydantic import BaseModel
from rabbit_support import queue_depth, rabbit_app
from streamlib_rabbit.testing import RabbitHarness

from streamlib.errors import PublishError
from streamlib.testing import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit]

TIMEOUT = 30.0


class Item(BaseModel):
    seq: int


async def test_a_dead_letter_larger_than_the_frame_limit_arrives_trimmed(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    source, sink = unique("huge-in"), unique("huge-out")
    consumer = {"dlq": True, "max-attempts": 1}
    app = rabbit_app(
        rabbit_url,
        unique("huge"),
        {
            "work-in-0": {"destination": source, "group": "g", "consumer": consumer},
            "work-out-0": {"destination": sink},
        },
    )
    reader = rabbit_app(
        rabbit_url, unique("reader"), {"take-in-0": {"destination": sink, "group": "r"}}
    )
    out: Collector[int] = Collector()
    reason = "boom " + "x" * 300_000  # the default frame_max is 128 KiB

    @app.processor
    async def work(item: Item) -> Item:
        if item.seq == 5:
            raise ValueError(reason)
        return item

    @reader.sink
    async def take(item: Item) -> None:
        out.add(item.seq)

    harness = RabbitHarness(rabbit_url)
    async with reader.run(), app.run():
        output = await app.output(source)
        for seq in range(10):
            await (await output.send(Item(seq=seq)))
        letters = await harness.dead_letters(source, "g", 1)
        await out.wait_for(9, TIMEOUT)
        assert queue_depth(f"{source}.g") == 0
    await harness.aclose()
    assert sorted(out.items) == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert [Item.model_validate_json(letter.body).seq for letter in letters] == [5]
    message = letters[0].headers["x-exception-message"]
    assert message.startswith("boom xxx")
    assert message.endswith(" bytes]") and "... [truncated " in message
    assert len(message) < 131_072
    assert letters[0].headers["x-exception-fqcn"] == "builtins.ValueError"


async def test_a_message_whose_headers_exceed_the_frame_limit_fails_alone(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("big-headers")
    app = rabbit_app(
        rabbit_url, unique("sender"), {"take-in-0": {"destination": dest, "group": "g"}}
    )
    got: Collector[int] = Collector()

    @app.sink
    async def take(item: Item) -> None:
        got.add(item.seq)

    async with app.run():
        await app.send(dest, Item(seq=1))
        with pytest.raises(PublishError, match="frame_max"):
            await app.send(dest, Item(seq=2), headers={"note": "y" * 200_000})
        await app.send(dest, Item(seq=3))
        assert await got.wait_for(2, TIMEOUT) == [1, 3]


async def test_without_publisher_confirms_a_dead_letter_is_still_confirmed_before_the_ack(
    rabbit_url: str, unique: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    dest, dlx = unique("unconfirmed"), unique("dlx")
    queue = f"{dest}.g"
    consumer = {
        "dlq": True,
        "max-attempts": 1,
        "back-off-initial-interval": 0.2,
        "dead-letter-exchange": dlx,
    }
    app = rabbit_app(
        rabbit_url,
        unique("unconfirmed"),
        {"take-in-0": {"destination": dest, "group": "g", "consumer": consumer}},
        binder={"publisher-confirms": False},
    )
    handled: Collector[int] = Collector()

    @app.sink
    async def take(item: Item) -> None:
        handled.add(item.seq)
        raise ValueError(f"bad {item.seq}")

    harness = RabbitHarness(rabbit_url)
    connection = await aio_pika.connect(rabbit_url)
    async with connection, app.run():
        channel = await connection.channel()
        # The dead-letter exchange goes away: a dead letter written now is refused (404).
        await channel.exchange_delete(dlx)
        await app.send(dest, Item(seq=1))
        await handled.wait_for(1, TIMEOUT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        refused = False
        while loop.time() < deadline:
            refused = any("dead-lettering a message" in r.getMessage() for r in caplog.records)
            if refused or await asyncio.to_thread(queue_depth, queue) == 0:
                break
            await asyncio.sleep(0.05)
        # The original is still unacknowledged: once the exchange is back, its dead letter
        # is written and only then is it acked.
        exchange = await channel.declare_exchange(dlx, aio_pika.ExchangeType.DIRECT, durable=True)
        dlq = await channel.declare_queue(f"{queue}.dlq", durable=True)
        await dlq.bind(exchange, queue)
        letters = await harness.dead_letters(dest, "g", 1)
        assert [Item.model_validate_json(letter.body).seq for letter in letters] == [1], (
            "the dead letter was lost" + ("" if refused else "; no write of it was refused")
        )
        assert letters[0].headers["x-exception-message"] == "bad 1"
        assert await asyncio.to_thread(queue_depth, queue) == 0
    await harness.aclose()
