"""An app for the CLI test: a source feeding a slow sink that logs start and finish."""

import asyncio
import os

from streamlib import StreamApp

app = StreamApp("cli-test")
LOG = os.environ["CLI_TEST_LOG"]


def _write(line: str) -> None:
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(line + "\n")


counter = iter(range(1_000_000))


@app.source(interval=0.05)
async def tick() -> int:
    return next(counter)


@app.sink
async def work(n: int) -> None:
    _write(f"start {n}")
    await asyncio.sleep(0.3)
    _write(f"finish {n}")
