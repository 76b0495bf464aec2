"""A participant with an outbox as its own OS process, killed between its commit and its reply.

Reads its settings from the JSON in ``$SAGA_PARTICIPANT`` (binder config, destination, store,
the file that lists the commands it already died for). Its handler records each command's
effect in the table ``effects`` inside the outbox transaction; the first time it is about to
send a command's reply, it notes the command id in the kill file and SIGKILLs itself. Prints
``ready`` once its bindings run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from streamlib import StreamApp
from streamlib.saga import OutboxMessage, Participant, PostgresSagaStore, StoreTransaction
from streamlib.saga._support import store_from


class Charge(BaseModel):
    n: int


class CrashingParticipant(Participant):
    """Dies once per command after its transaction committed, before the reply went out.

    The kill waits while the relay sends an earlier reply: a death between sending a reply and
    marking it sent is another fault (that reply goes out again), not the one tried here.
    """

    kill_file: Path
    relaying: asyncio.Lock

    relay_task: asyncio.Task[Any] | None = None

    async def _relay(self) -> None:
        async with self.relaying:
            self.relay_task = asyncio.current_task()
            await super()._relay()

    async def _deliver(self, reply: OutboxMessage) -> None:
        died_for = set(self.kill_file.read_text().split()) if self.kill_file.exists() else set()
        relayed = self.relaying.locked() and asyncio.current_task() is self.relay_task
        if reply.command_id not in died_for and not relayed:
            await self.relaying.acquire()
            with self.kill_file.open("a") as out:
                out.write(reply.command_id + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        await super()._deliver(reply)


async def main() -> None:
    spec = json.loads(os.environ["SAGA_PARTICIPANT"])
    store = store_from(spec["store"], spec.get("schema"))
    postgres = isinstance(store, PostgresSagaStore)
    app = StreamApp("charges", config=spec["config"])
    participant = CrashingParticipant(
        app, spec["destination"], store=store, outbox=True, relay_interval=0.1, relay_claim=0.5
    )
    participant.kill_file = Path(spec["kill_file"])
    participant.relaying = asyncio.Lock()
    insert = (
        "INSERT INTO effects (command_id) VALUES ($1)"
        if postgres
        else ("INSERT INTO effects (command_id) VALUES (?)")
    )

    @participant.handler(Charge, transactional=True)
    async def charge(cmd: Charge, tx: StoreTransaction) -> dict[str, int]:
        await tx.execute(insert, f"c-{cmd.n}")
        return {"charged": cmd.n}

    key = "BIGSERIAL" if postgres else "INTEGER"
    async with store.transaction() as tx:
        await tx.execute(
            f"CREATE TABLE IF NOT EXISTS effects (seq {key} PRIMARY KEY, command_id TEXT NOT NULL)"
        )
    async with app.run():
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
