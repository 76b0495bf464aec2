"""Connections closed by the broker mid-stream: both sides reconnect, nothing confirmed is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel
from rabbit_support import ConfirmTally, close_connections

from streamlib import StreamApp
from streamlib.testing import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit]

TIMEOUT = 60.0


class Item(BaseModel):
    seq: int


def app_named(url: str, name: str, bindings: dict[str, Any]) -> StreamApp:
    config = {
        "name": name,
        "binders": {
            "rabbit": {
                "type": "rabbit",
                "url": url,
                "connection-name": name,
                "reconnect-interval": 0.2,
            }
        },
        "bindings": bindings,
    }
    return StreamApp(name, config=config)


async def test_dropped_connections_recover_and_lose_nothing_confirmed(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("drop")
    name = unique("dropper")
    got: Collector[int] = Collector()
    app = app_named(rabbit_url, name, {"take-in-0": {"destination": dest, "group": "g"}})

    @app.sink
    async def take(item: Item) -> None:
        got.add(item.seq)

    tally = ConfirmTally(app, dest, lambda seq: Item(seq=seq))
    publish = tally.publish

    async with app.run():
        for start in range(0, 3000, 100):
            await publish(range(start, start + 100))
            if start in (1000, 2000):
                assert await asyncio.to_thread(close_connections, name) == 2
        await tally.resend_failed()
        assert tally.confirmed == set(range(3000))
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while set(got.items) != tally.confirmed and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert set(got.items) == tally.confirmed
        assert app.health()["binders"]["rabbit"]["status"] == "up"
