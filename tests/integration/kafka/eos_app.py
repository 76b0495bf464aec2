"""A processor process for the crash tests of processors.

    python eos_app.py BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP [plain]

Relays every event of IN_TOPIC to OUT_TOPIC, in Kafka transactions (consumer extension
``transactional: true``) unless ``plain`` is given. Prints ``ready`` once consuming; SIGTERM
stops it gracefully.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from pydantic import BaseModel

from streamlib import StreamApp


class Event(BaseModel):
    key: str
    seq: int


async def main(bootstrap: str, source: str, target: str, group: str, transactional: bool) -> None:
    config = {
        "name": "eos",
        "binders": {
            "kafka": {
                "type": "kafka",
                "bootstrap-servers": bootstrap,
                "producer": {"transaction-timeout-ms": 10000},
            }
        },
        "bindings": {
            "relay-in-0": {
                "destination": source,
                "group": group,
                "consumer": {"transactional": transactional, "max-in-flight": 200},
            },
            "relay-out-0": {"destination": target},
        },
    }
    app = StreamApp("eos", config=config)

    @app.processor
    async def relay(event: Event) -> Event:
        await asyncio.sleep(0.002)
        return event

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with app.run():
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    bootstrap, source, target, group = sys.argv[1:5]
    asyncio.run(main(bootstrap, source, target, group, sys.argv[5:6] != ["plain"]))
