"""Wiring mistakes fail at start-up, naming the key (or variable) at fault."""

from typing import Any

import pytest
from pydantic import BaseModel

from streamlib import ConfigError, StreamApp, StreamlibError

pytestmark = pytest.mark.anyio


class Quote(BaseModel):
    symbol: str
    price: float


class Priced(BaseModel):
    symbol: str
    total: float


def _price_app(bindings: dict[str, Any], **top: Any) -> StreamApp:
    app = StreamApp("prices", config={"bindings": bindings, **top})

    @app.processor
    async def price(quote: Quote) -> Priced:
        return Priced(symbol=quote.symbol, total=quote.price)

    return app


async def _start_error(app: StreamApp) -> str:
    with pytest.raises(ConfigError) as caught:
        async with app.run():
            pass
    return str(caught.value)


@pytest.mark.parametrize(
    ("section", "typo", "meant"),
    [
        ("consumer", "max-attemps", "max-attempts"),
        ("consumer", "concurency", "concurrency"),
        ("producer", "partiton-key", "partition-key"),
    ],
)
async def test_a_misspelt_common_key_fails_with_did_you_mean(
    section: str, typo: str, meant: str
) -> None:
    binding = "price-in-0" if section == "consumer" else "price-out-0"
    app = _price_app({binding: {section: {typo: 3}}})
    error = await _start_error(app)
    assert error == (f"bindings.{binding}.{section}.{typo}: unknown key; did you mean {meant!r}?")


async def test_the_memory_binder_rejects_keys_it_does_not_have() -> None:
    app = _price_app({"price-in-0": {"consumer": {"start-offset": "earliest"}}})
    error = await _start_error(app)
    assert error.startswith("bindings.price-in-0.consumer.start-offset: unknown key")


async def test_a_misspelt_top_level_key_fails_with_did_you_mean() -> None:
    app = _price_app({}, **{"instance-cout": 2})
    assert await _start_error(app) == "instance-cout: unknown key; did you mean 'instance-count'?"


async def test_an_input_binding_with_no_handler_fails_with_did_you_mean() -> None:
    app = _price_app({"prices-in-0": {"destination": "quotes", "group": "pricing"}})
    assert await _start_error(app) == (
        "bindings.prices-in-0: no handler consumes this binding; did you mean 'price-in-0'?"
    )


async def test_a_streamlib_variable_for_no_key_fails_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMLIB_BINDNGS__PRICE_IN_0__GROUP", "pricing")
    error = await _start_error(_price_app({}))
    assert error == (
        "STREAMLIB_BINDNGS__PRICE_IN_0__GROUP: sets 'bindngs', which is no configuration key; "
        "did you mean 'bindings'?"
    )


async def test_a_misspelt_key_set_by_a_variable_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMLIB_BINDINGS__PRICE_IN_0__CONSUMER__MAX_ATTEMPS", "5")
    error = await _start_error(_price_app({}))
    assert error == (
        "bindings.price-in-0.consumer.max-attemps: unknown key; did you mean 'max-attempts'? "
        "(set by STREAMLIB_BINDINGS__PRICE_IN_0__CONSUMER__MAX_ATTEMPS)"
    )


async def test_a_partition_key_missing_from_the_payload_model_fails() -> None:
    app = _price_app(
        {"price-out-0": {"producer": {"partition-key": "payload.symbl", "partition-count": 2}}}
    )
    assert await _start_error(app) == (
        "bindings.price-out-0.producer.partition-key: Priced (returned by price) has no field "
        "'symbl'; did you mean 'symbol'?"
    )


async def test_a_partition_key_on_the_payload_model_is_accepted() -> None:
    app = _price_app(
        {"price-out-0": {"producer": {"partition-key": "payload.symbol", "partition-count": 2}}}
    )
    async with app.run():
        pass


async def test_an_instance_index_list_beyond_the_partition_count_fails() -> None:
    app = _price_app(
        {
            "quotes": {"producer": {"partition-key": "payload.symbol", "partition-count": 2}},
            "price-in-0": {
                "destination": "quotes",
                "group": "pricing",
                "consumer": {"partitioned": True, "instance-index-list": [0, 5]},
            },
        }
    )
    assert await _start_error(app) == (
        "bindings.price-in-0.consumer.instance-index-list: partition 5 is not below the "
        "partition-count 2 of bindings.quotes (destination 'quotes')"
    )


async def test_send_before_the_app_runs_raises() -> None:
    app = _price_app({})
    with pytest.raises(StreamlibError, match=r"app\.send\('quotes'\) before the app runs"):
        await app.send("quotes", Quote(symbol="X", price=1.0))


async def test_an_input_of_another_app_sharing_the_configuration_is_left_alone() -> None:
    shared = {"price-in-0": {"destination": "quotes"}, "audit-in-0": {"destination": "prices"}}
    app = StreamApp("audit", config={"bindings": shared})

    @app.sink
    async def audit(priced: Priced) -> None:
        return None

    async with app.run():
        pass


async def test_a_misspelt_key_of_a_feature_section_fails_naming_it_without_the_feature() -> None:
    # No saga runs in this app; a configuration shared with one still has its keys checked.
    app = _price_app({}, saga={"stor": "orders.db"})
    assert await _start_error(app) == "saga.stor: unknown key; did you mean 'store'?"


async def test_an_invalid_bus_value_fails_naming_it_in_an_app_without_a_bus() -> None:
    app = _price_app({}, bus={"ack-wait": -1})
    assert (await _start_error(app)).startswith("bus.ack-wait: Input should be greater than")


async def test_a_top_level_key_close_to_a_feature_section_fails_with_did_you_mean() -> None:
    app = _price_app({}, sagas={"store": "orders.db"})
    assert await _start_error(app) == "sagas: unknown key; did you mean 'saga'?"


class Mine(BaseModel):
    store: str = ""


async def test_a_feature_section_cannot_be_declared_with_another_model() -> None:
    app = _price_app({})
    with pytest.raises(ConfigError) as caught:
        app.settings("saga", Mine)
    assert str(caught.value) == "saga: 'saga' is a streamlib configuration key"
