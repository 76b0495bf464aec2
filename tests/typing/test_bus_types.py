"""Settings, refresh listeners and bus listeners keep their types under mypy --strict."""

from typing import assert_type

from pydantic import BaseModel

from streamlib import StreamApp
from streamlib.bus import Bus, BusReply, RemoteApplicationEvent
from streamlib.refresh import RefreshResult


class Pricing(BaseModel):
    tax_rate: float = 0.2


class PriceListChangedRemoteApplicationEvent(RemoteApplicationEvent):
    version: int


app = StreamApp("typing-bus")
pricing = app.settings("pricing", Pricing)
bus = Bus(app)
assert_type(pricing.value, Pricing)
assert_type(pricing.value.tax_rate, float)


@bus.on_refresh
def changed(keys: frozenset[str]) -> None:
    assert_type(keys, frozenset[str])


@app.on_refresh
async def changed_async(keys: frozenset[str]) -> None:
    return None


@bus.on_event(PriceListChangedRemoteApplicationEvent)
async def price_list(event: PriceListChangedRemoteApplicationEvent) -> None:
    assert_type(event.version, int)


async def send() -> None:
    assert_type(await bus.refresh("billing", wait=1), BusReply)
    assert_type((await bus.env({"pricing.tax-rate": 0.1})).nodes, tuple[str, ...])
    assert_type(await app.refresh(), RefreshResult)


def test_bus_typing_module_imports() -> None:
    assert changed.__name__ == "changed"
