"""A progress bar on standard error, printed by hand: a bar for one command is not worth a
dependency of the core (which has four), and this one is ten lines.

On a terminal the bar is redrawn in place; otherwise (a log, a pipe) a line is printed at
most once a second and at the end.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class Progress:
    """``done/total`` with a bar and the rate so far."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        self._label = label
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._start = time.monotonic()
        self._shown = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self._tty or now - self._shown >= 1.0:
            self._shown = now
            self._draw(final=False)

    def close(self) -> None:
        self._draw(final=True)

    def _draw(self, final: bool) -> None:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        filled = WIDTH * self.done // self.total if self.total else WIDTH
        bar = "#" * filled + "." * (WIDTH - filled)
        line = f"{self._label} [{bar}] {self.done}/{self.total} ({self.done / elapsed:.1f}/s)"
        if self._tty:
            self._stream.write("\r" + line + ("\n" if final else ""))
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
