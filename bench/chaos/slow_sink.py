"""The backlog consumer: a streamlib sink that sleeps in every call, run as its own process.

python -m bench.chaos.slow_sink SPEC.json
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from streamlib import StreamApp


async def serve(spec: dict[str, Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    delay = float(spec["handler_ms"]) / 1000
    app = StreamApp("chaos-backlog", config=spec["streamlib"])

    @app.sink
    async def slow(body: bytes) -> None:
        await asyncio.sleep(delay)

    async with app.run():
        await stop.wait()


def main(argv: list[str]) -> int:
    asyncio.run(serve(json.loads(Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
