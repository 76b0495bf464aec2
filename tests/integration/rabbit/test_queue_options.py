"""Queue options of a consumer binding become the queue's arguments on the broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel
from rabbit_support import queue_info, rabbit_app

from streamlib.errors import ConfigError
from streamlib.testing import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit]


class Item(BaseModel):
    seq: int


async def declared_arguments(url: str, dest: str, consumer: dict[str, Any]) -> dict[str, Any]:
    app = rabbit_app(
        url, "opts", {"take-in-0": {"destination": dest, "group": "g", "consumer": consumer}}
    )

    @app.sink
    async def take(item: Item) -> None: ...

    async with app.run():
        arguments: dict[str, Any] = queue_info(f"{dest}.g")["arguments"]
    return arguments


async def test_quorum_queue(rabbit_url: str, unique: Callable[[str], str]) -> None:
    args = await declared_arguments(rabbit_url, unique("q"), {"quorum": True})
    assert args == {"x-queue-type": "quorum"}


async def test_quorum_delivery_limit_and_at_least_once_dead_lettering(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    consumer = {
        "quorum": True,
        "delivery-limit": 3,
        "dead-letter-strategy": "at-least-once",
        "dlq": True,
    }
    dest = unique("q")
    args = await declared_arguments(rabbit_url, dest, consumer)
    assert args == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 3,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-dead-letter-exchange": "DLX",
        "x-dead-letter-routing-key": f"{dest}.g",
    }


async def test_single_active_consumer(rabbit_url: str, unique: Callable[[str], str]) -> None:
    args = await declared_arguments(rabbit_url, unique("q"), {"single-active-consumer": True})
    assert args == {"x-single-active-consumer": True}


async def test_max_length_and_overflow(rabbit_url: str, unique: Callable[[str], str]) -> None:
    consumer = {"max-length": 10, "max-length-bytes": 4096, "overflow": "reject-publish"}
    args = await declared_arguments(rabbit_url, unique("q"), consumer)
    assert args == {"x-max-length": 10, "x-max-length-bytes": 4096, "x-overflow": "reject-publish"}


async def test_message_ttl(rabbit_url: str, unique: Callable[[str], str]) -> None:
    args = await declared_arguments(rabbit_url, unique("q"), {"ttl": 60000})
    assert args == {"x-message-ttl": 60000}


async def test_expires(rabbit_url: str, unique: Callable[[str], str]) -> None:
    args = await declared_arguments(rabbit_url, unique("q"), {"expires": 600000})
    assert args == {"x-expires": 600000}


async def test_dlq_ttl_on_the_dlq(rabbit_url: str, unique: Callable[[str], str]) -> None:
    dest = unique("q")
    await declared_arguments(rabbit_url, dest, {"dlq": True, "dlq-ttl": 5000})
    assert queue_info(f"{dest}.g.dlq")["arguments"] == {
        "x-message-ttl": 5000,
        "x-dead-letter-exchange": "",
    }


async def test_quorum_queue_delivers(rabbit_url: str, unique: Callable[[str], str]) -> None:
    dest = unique("q")
    got: Collector[int] = Collector()
    consumer = {"quorum": True, "dlq": True}
    app = rabbit_app(
        rabbit_url, "opts", {"take-in-0": {"destination": dest, "group": "g", "consumer": consumer}}
    )

    @app.sink
    async def take(item: Item) -> None:
        got.add(item.seq)

    async with app.run():
        for seq in range(5):
            await app.send(dest, Item(seq=seq))
        assert await got.wait_for(5, 10) == [0, 1, 2, 3, 4]
    assert queue_info(f"{dest}.g.dlq")["arguments"] == {"x-queue-type": "quorum"}


async def test_unknown_key_names_its_path(rabbit_url: str, unique: Callable[[str], str]) -> None:
    with pytest.raises(ConfigError, match=r"bindings\.take-in-0\.consumer\.prefech: unknown key"):
        await declared_arguments(rabbit_url, unique("q"), {"prefech": 10})
