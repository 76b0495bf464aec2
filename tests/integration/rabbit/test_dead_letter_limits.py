"""Dead letters the broker would refuse: headers trimmed to the frame limit, never a loop."""

from __future__ import annotations

from collections.abc import Callable

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
