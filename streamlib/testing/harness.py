"""How the conformance suite drives one binder: its config, its DLQ reader and its timing knob."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from ..messages import Envelope
from .brokers import unique_name


class BinderHarness(ABC):
    """One binder under test.

    ``settle`` is how long the suite waits to conclude that nothing more arrives: the one
    timing knob a binder declares (its broker's delivery latency, with a margin). ``timeout``
    only bounds every wait for an expected message, so that a failing test ends; a passing test
    never waits for it.
    """

    name: str
    settle: float = 0.3
    timeout: float = 30.0

    @abstractmethod
    def binder_config(self) -> Mapping[str, Any]:
        """The top-level config keys (``binders``, ``default-binder``) selecting this binder."""

    @abstractmethod
    async def dead_letters(self, destination: str, group: str, expected: int) -> list[Envelope]:
        """The dead letters of ``destination``/``group``, once ``expected`` are there.

        Waits up to ``timeout``, then ``settle`` more to catch extras, and returns all seen.
        """

    def unique(self, prefix: str) -> str:
        """A destination or group name no other test uses."""
        return unique_name(prefix)

    async def aclose(self) -> None:
        """Release whatever the harness holds (connections used to read DLQs)."""
        return None


class MemoryHarness(BinderHarness):
    """The in-memory binder."""

    name = "memory"
    settle = 0.1

    def binder_config(self) -> Mapping[str, Any]:
        return {"binders": {"memory": {"type": "memory"}}, "default-binder": "memory"}

    async def dead_letters(self, destination: str, group: str, expected: int) -> list[Envelope]:
        from ..memory import memory_broker

        letters = memory_broker().dead_letters.setdefault(f"error.{destination}.{group}", [])
        try:
            async with asyncio.timeout(self.timeout):
                while len(letters) < expected:
                    await asyncio.sleep(0.01)
        except TimeoutError:
            pass
        await asyncio.sleep(self.settle)
        return list(letters)
