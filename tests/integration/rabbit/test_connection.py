"""Connection failures surface as streamlib errors that carry no secrets."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import BaseModel
from rabbit_support import rabbit_app
from yarl import URL

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
