"""A consumer process for the fault test: records every handled message in a file.

    python fault_app.py BOOTSTRAP TOPIC GROUP OUTFILE

Each handled message appends ``<monotonic ns> <key> <seq>`` to OUTFILE. Prints ``ready``
once the binding is consuming; SIGTERM stops it gracefully.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import TextIO

from pydantic import BaseModel

from streamlib import StreamApp


class Event(BaseModel):
    key: str
    seq: int


async def main(bootstrap: str, topic: str, group: str, out: TextIO) -> None:
    config = {
        "binders": {
            "kafka": {
                "type": "kafka",
                "bootstrap-servers": bootstrap,
                "consumer": {"session-timeout-ms": 6000, "heartbeat-interval-ms": 500},
            }
        },
        "bindings": {"handle-in-0": {"destination": topic, "group": group}},
    }
    app = StreamApp("fault", config=config)

    @app.sink
    async def handle(event: Event) -> None:
        await asyncio.sleep(0.001)
        out.write(f"{time.monotonic_ns()} {event.key} {event.seq}\n")

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with app.run():
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    bootstrap, topic, group, outfile = sys.argv[1:5]
    with open(outfile, "a", buffering=1) as lines:  # line-buffered: a kill loses at most one
        asyncio.run(main(bootstrap, topic, group, lines))
