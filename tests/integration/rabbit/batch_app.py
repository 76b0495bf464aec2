"""A batch consumer run as a process so a test can SIGKILL it mid-batch.

    python batch_app.py URL DESTINATION LOG HANG_AFTER

Consumes ``<DESTINATION>.g`` in batches of 25 and writes each batch's seqs as one line of LOG
before it is acked. With HANG_AFTER > 0 the call of that batch never returns (a batch in
hand, unacked, when the test kills the process); it prints ``hang`` then. Prints ``ready``
once consuming; stops cleanly when its stdin closes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from batch_support import ScriptedBatches, binder, consumer_spec

from streamlib.binder import Envelope, Outcome


class LoggedBatches(ScriptedBatches):
    def __init__(self, log: str, hang_after: int) -> None:
        super().__init__(size=25, wait=0.05)
        self._log = open(log, "a", buffering=1)  # noqa: SIM115 - open for the process's life
        self._hang_after = hang_after

    async def dispatch_batch(self, envelopes: Sequence[Envelope]) -> list[Outcome]:
        outcomes = await super().dispatch_batch(envelopes)
        self._log.write(" ".join(str(seq) for seq in self.batches[-1]) + "\n")
        if len(self.batches) == self._hang_after:
            print("hang", flush=True)
            await asyncio.Event().wait()
        return outcomes


async def main(url: str, destination: str, log: str, hang_after: int) -> None:
    rabbit = binder(url, "batch-app")
    try:
        spec = consumer_spec("take", destination, **{"batch-size": 25, "batch-wait-ms": 50})
        await rabbit.bind_consumer(spec, LoggedBatches(log, hang_after))
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)
    finally:
        await rabbit.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
