"""Connection failures surface as streamlib errors that carry no secrets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from pydantic import BaseModel
from rabbit_support import rabbit_app
from yarl import URL

from streamlib import StreamApp
from streamlib.errors import BrokerError, ConnectionLostError

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit]


class Item(BaseModel):
    seq: int


async def test_wrong_password_is_a_broker_error_without_the_password(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    url = str(URL(rabbit_url).with_password("wr0ng-s3cret"))
    app = rabbit_app(url, "auth", {})
    with pytest.raises(BrokerError) as info:
        async with app.run():
            await app.send(unique("x"), Item(seq=1))
    assert not info.value.retriable
    assert "wr0ng-s3cret" not in str(info.value)
    assert "credentials" in str(info.value)


async def test_no_broker_is_a_retriable_connection_error(unique: Callable[[str], str]) -> None:
    app = rabbit_app("amqp://guest:s3cret@127.0.0.1:1/", "nobody", {})
    with pytest.raises(ConnectionLostError) as info:
        async with app.run():
            await app.send(unique("x"), Item(seq=1))
    assert info.value.retriable
    assert "s3cret" not in str(info.value)


async def test_health_reports_each_connection(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("h")
    app = rabbit_app(rabbit_url, "health", {"take-in-0": {"destination": dest, "group": "g"}})

    @app.sink
    async def take(item: Item) -> None: ...

    async with app.run():
        await app.send(dest, Item(seq=1))
        health = app.health()["binders"]["rabbit"]
    assert health["status"] == "up"
    assert health["connections"] == {"consumer": "up", "producer": "up"}
    assert health["bindings"] == {"take-in-0": True}
    assert "guest:guest" not in health["broker"]


async def test_addresses_are_tried_in_order_until_one_answers(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("addr")
    config = {
        "binders": {"rabbit": {"type": "rabbit", "addresses": ["127.0.0.1:1", rabbit_url]}},
        "default-binder": "rabbit",
        "bindings": {"take-in-0": {"destination": dest, "group": "g"}},
    }
    app = StreamApp("addresses", config=config)
    got: list[int] = []

    @app.sink
    async def take(item: Item) -> None:
        got.append(item.seq)

    async with app.run():
        await app.send(dest, Item(seq=1))
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.05)
    assert got == [1]


async def test_no_address_answering_names_them_all_without_secrets(
    unique: Callable[[str], str],
) -> None:
    addresses = ["amqp://guest:s3cret@127.0.0.1:1/", "amqp://guest:s3cret@127.0.0.1:2/"]
    config = {
        "binders": {"rabbit": {"type": "rabbit", "addresses": addresses}},
        "default-binder": "rabbit",
    }
    app = StreamApp("nobody", config=config)
    with pytest.raises(ConnectionLostError) as info:
        async with app.run():
            await app.send(unique("x"), Item(seq=1))
    assert "127.0.0.1:1" in str(info.value) and "127.0.0.1:2" in str(info.value)
    assert "s3cret" not in str(info.value)
