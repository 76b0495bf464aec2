"""The tiny binder passes streamlib's binder conformance suite."""

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from streamlib.binder import Envelope, register_binder
from streamlib.testing import BinderHarness
from streamlib.testing.conformance import BinderConformance

from .tiny_binder import BROKER, TinyBinder

register_binder("tiny", TinyBinder)  # a published binder declares an entry point instead


class TinyHarness(BinderHarness):
    name = "tiny"
    settle = 0.1  # in-process: a stray message would show up at once

    def binder_config(self) -> Mapping[str, Any]:
        return {"binders": {"tiny": {"type": "tiny"}}, "default-binder": "tiny"}

    async def dead_letters(self, destination: str, group: str, expected: int) -> list[Envelope]:
        letters = BROKER.dead_letters.setdefault(f"{destination}.{group}", [])
        async with asyncio.timeout(self.timeout):
            while len(letters) < expected:
                await asyncio.sleep(0.01)
        await asyncio.sleep(self.settle)
        return list(letters)


@pytest.fixture
async def binder_harness() -> AsyncIterator[BinderHarness]:
    harness = TinyHarness()
    yield harness
    await harness.aclose()


class TestTinyBinder(BinderConformance):
    pass
