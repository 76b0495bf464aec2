"""What a participant did, one line per piece of work (in memory, and in a file if given)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio.to_thread


class WorkLog:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.entries: list[tuple[str, str]] = []

    async def record(self, action: str, order_id: str) -> None:
        self.entries.append((action, order_id))
        if self.path is not None:
            await anyio.to_thread.run_sync(self._append, f"{action} {order_id}\n")

    def _append(self, line: str) -> None:
        assert self.path is not None
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)

    def counts(self) -> Counter[tuple[str, str]]:
        """How many times each (action, order) was done."""
        return Counter(self.entries)


def read_counts(path: Path) -> Counter[tuple[str, str]]:
    """The counts of a work log file."""
    if not path.exists():
        return Counter()
    lines = path.read_text(encoding="utf-8").split()
    return Counter(zip(lines[0::2], lines[1::2], strict=True))
