"""Gathers what handlers received so a test can wait for it and assert on it."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Collector(Generic[T]):
    """A list that tests can await: ``await items.wait_for(10, timeout=5)``."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = asyncio.Event()

    def add(self, item: T) -> None:
        self.items.append(item)
        self._changed.set()

    def __len__(self) -> int:
        return len(self.items)

    async def wait_for(self, count: int, timeout: float) -> list[T]:
        """Wait until at least ``count`` items arrived; AssertionError after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.items) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"expected {count} items within {timeout}s, got {len(self.items)}: "
                f"{self.items[:10]!r}"
            ) from None
        return list(self.items)
