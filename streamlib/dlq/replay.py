"""The replay loop: republish dead letters at a bounded rate, remove each only once confirmed.

Up to ``window`` copies are unconfirmed at a time; the loop waits for their confirmations in
the order they were sent and removes the confirmed prefix from the DLQ. Killed at any point,
a replay has lost nothing, and the next one sends again at most the unconfirmed window.
With a rate limit, each copy is confirmed and its message removed before the next is sent
(a window of one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import aclosing

from ..errors import StreamlibError
from .letters import DeadLetter, ReplaySession


class RateLimit:
    """At most ``rate`` messages a second (None: unlimited), evenly spaced."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._next: float | None = None

    def delay(self) -> float:
        """Seconds to wait before the next message, and books its slot."""
        if not self._interval:
            return 0.0
        now = asyncio.get_running_loop().time()
        slot = now if self._next is None else max(self._next, now)
        self._next = slot + self._interval
        return slot - now


async def replay(
    session: ReplaySession,
    destination: str | None,
    *,
    limit: int | None = None,
    rate: float | None = None,
    window: int = 100,
    progress: Callable[[int], None] = lambda n: None,
) -> int:
    """Replay up to ``limit`` messages of ``session``; returns how many left the DLQ.

    ``progress`` is called with the number removed each time some are. Raises the
    PublishError of the first copy the broker refused, after removing those confirmed before
    it.
    """
    pacing = RateLimit(rate)
    pending: list[tuple[DeadLetter, Awaitable[None]]] = []
    removed = 0

    async def settle() -> None:
        nonlocal removed
        confirmed: list[DeadLetter] = []
        try:
            for letter, confirmation in pending:
                await confirmation
                confirmed.append(letter)
        finally:
            rest = [c for _, c in pending[len(confirmed) + 1 :]]
            pending.clear()
            if rest:
                # Waited for, not removed: a later one cannot leave the DLQ before an earlier.
                await asyncio.gather(*rest, return_exceptions=True)
            if confirmed:
                await session.remove(confirmed)
                removed += len(confirmed)
                progress(len(confirmed))

    async with aclosing(session.letters()) as letters:
        async for letter in letters:
            if limit is not None and removed + len(pending) >= limit:
                break
            if destination is None and letter.original is None:
                await settle()
                raise StreamlibError(
                    f"{letter.dlq} {letter.position} names no original destination (no "
                    "x-original-* header); give one with --to"
                )
            if rate:
                await settle()
                await asyncio.sleep(pacing.delay())
            pending.append((letter, await session.forward(letter, destination)))
            if len(pending) >= window:
                await settle()
        await settle()
    return removed
