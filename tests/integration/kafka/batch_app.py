"""A batch consumer process for the kill test: records every handled record in a file.

    python batch_app.py BOOTSTRAP TOPIC GROUP OUTFILE

The handler takes batches of up to 50 records and handles them one after another, appending
``<partition> <offset>`` per record to OUTFILE, so a kill lands in the middle of a batch.
Prints ``ready`` once the binding is consuming; SIGTERM stops it gracefully.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from batch_binding import ScriptedBatches, consumer_spec, kafka_binder

from streamlib.binder import ACK, Envelope, Outcome


async def main(bootstrap: str, topic: str, group: str, out: TextIO) -> None:
    async def handle(envelopes: Sequence[Envelope]) -> list[Outcome]:
        for envelope in envelopes:
            await asyncio.sleep(0.001)
            out.write(f"{envelope.partition} {envelope.offset}\n")
        return [ACK] * len(envelopes)

    settings = {"consumer": {"session-timeout-ms": 6000, "heartbeat-interval-ms": 500}}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with kafka_binder(bootstrap, **settings) as binder:
        dispatch = ScriptedBatches(50, 0.0, handle)
        await binder.bind_consumer(consumer_spec(topic, group), dispatch)
        print("ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    bootstrap, topic, group, outfile = sys.argv[1:5]
    with open(outfile, "a", buffering=1) as lines:  # line-buffered: a kill loses at most one
        asyncio.run(main(bootstrap, topic, group, lines))
