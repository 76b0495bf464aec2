"""The app under test: one streamlib processor, run as its own process by the chaos driver.

    python -m bench.chaos.processor SPEC.json

It relays each input ``{"seq", "key"}`` to the output with a fresh send id. For the inputs the
workload picks, it makes the broker refuse the output: on Kafka an output larger than the output
topic's ``max.message.bytes``, on RabbitMQ an output to an exchange whose only queue is full and
rejects publishes. Those inputs must end in the DLQ. SIGTERM stops the app cleanly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from streamlib import Message, StreamApp

from .workload import Workload


class Item(BaseModel):
    seq: int
    key: str


def build(spec: dict[str, Any]) -> StreamApp:
    workload = Workload(**spec["workload"])
    pad = "x" * int(spec.get("pad_bytes", 0))
    refused = spec.get("refused_destination")
    delay = float(spec.get("handler_ms", 0)) / 1000
    app = StreamApp("chaos-relay", config=spec["streamlib"])

    @app.processor
    async def relay(item: Item) -> Message[dict[str, Any]]:
        if delay:
            await asyncio.sleep(delay)
        out: dict[str, Any] = {"seq": item.seq, "key": item.key, "id": secrets.token_hex(8)}
        if workload.rejected(item.seq):
            if pad:
                out["pad"] = pad
            if refused:
                return Message(out, key=item.key, destination=refused)
        return Message(out, key=item.key)

    return app


async def serve(spec: dict[str, Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = build(spec)
    async with app.run():
        print(f"processor {os.getpid()} started", flush=True)
        await stop.wait()
    print(f"processor {os.getpid()} stopped", flush=True)


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s {os.getpid()} %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    spec = json.loads(Path(argv[0]).read_text())
    asyncio.run(serve(spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
