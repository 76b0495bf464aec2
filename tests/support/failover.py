"""Traffic for the failover tests: senders that send each key's sequence in order (a send is
retried until the broker confirms it), a sink that records what arrives, and the count of what
was lost, duplicated and how long consumption paused after a kill."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from pydantic import BaseModel

from streamlib import StreamApp
from streamlib.errors import StreamlibError


class Event(BaseModel):
    key: str
    seq: int


class Traffic:
    def __init__(self, app: StreamApp, destination: str, keys: list[str], keyed: bool) -> None:
        self.app, self.destination, self.keys, self.keyed = app, destination, keys, keyed
        self.received: dict[str, list[int]] = defaultdict(list)
        self.times: list[float] = []
        self.confirmed: dict[str, list[int]] = defaultdict(list)
        self.failed_sends = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def record(self, event: Event) -> None:
        """What the test's sink calls for every message it handles."""
        self.received[event.key].append(event.seq)
        self.times.append(time.monotonic())

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._send(key)) for key in self.keys]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _send(self, key: str) -> None:
        seq = 0
        while not self._stop.is_set():
            try:
                await self.app.send(
                    self.destination, {"key": key, "seq": seq}, key=key if self.keyed else None
                )
            except StreamlibError:
                self.failed_sends += 1  # not confirmed: sent again, in order
                await asyncio.sleep(0.2)
                continue
            self.confirmed[key].append(seq)
            seq += 1
            await asyncio.sleep(0.01)

    def lost(self) -> int:
        return sum(len(set(self.confirmed[k]) - set(self.received[k])) for k in self.keys)

    async def wait_for_everything_confirmed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.lost():
            assert time.monotonic() < deadline, "confirmed messages never arrived"
            await asyncio.sleep(0.2)

    def summary(self, label: str, killed_at: float) -> str:
        total = sum(len(v) for v in self.received.values())
        duplicates = total - sum(len(set(v)) for v in self.received.values())
        after = [t for t in self.times if t > killed_at]
        gaps = [b - a for a, b in zip([killed_at, *after], after, strict=False)]
        return (
            f"{label} failover: confirmed {sum(len(v) for v in self.confirmed.values())}, "
            f"received {total}, lost {self.lost()}, duplicates {duplicates}, "
            f"failed sends {self.failed_sends}, recovery {max(gaps, default=0.0):.1f} s"
        )

    def firsts_in_order(self) -> None:
        """Each key's messages first arrived in the order they were sent."""
        for key in self.keys:
            firsts = list(dict.fromkeys(self.received[key]))
            assert firsts == sorted(firsts), f"{key} out of order: {self.received[key]}"
