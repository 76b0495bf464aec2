"""Every decorator works with and without parentheses; mistakes fail at registration."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from streamlib import ConfigError, StreamApp
from streamlib.testing import run_app

pytestmark = pytest.mark.anyio


async def test_processor_and_sink_with_parentheses_and_source_without() -> None:
    app = StreamApp("forms", config={"bindings": {"tick-out-0": {"destination": "n"}}})

    @app.source
    async def tick() -> int:
        return 1

    @app.processor()
    async def double(n: int) -> int:
        return 2 * n

    @app.sink()
    async def drop(n: int) -> None:
        return None

    @app.source()
    async def tock() -> int:
        return 2

    async with run_app(app, observe=["n"]) as running:
        assert (await running.next("n")).payload == 1
        await running.send("double-in-0", 21)
        assert (await running.next("double-out-0")).payload == 42


def test_an_async_generator_is_rejected_at_registration() -> None:
    app = StreamApp("gen")
    with pytest.raises(ConfigError, match="processor split is an async generator"):

        @app.processor
        async def split(n: int) -> AsyncIterator[int]:
            yield n


def test_an_unresolvable_annotation_names_the_handler_and_the_name() -> None:
    app = StreamApp("hints")

    def declare() -> None:
        from decimal import Decimal  # only here: the string annotation cannot be resolved

        @app.sink
        async def book(amount: Decimal) -> None:
            return None

    with pytest.raises(
        ConfigError, match="sink book: cannot resolve the annotation name 'Decimal'"
    ):
        declare()
