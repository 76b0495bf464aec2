"""A participant with an outbox on SQLite over the memory binder: its work and reply commit
together, a business failure keeps no work, a duplicate is not answered twice, and the relay
sends a reply whose sending failed."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from streamlib import Message, StreamApp
from streamlib.saga import Participant, SqliteSagaStore, StepFailed, StoreTransaction
from streamlib.saga import headers as h
from streamlib.saga._support import header_text

pytestmark = pytest.mark.anyio


class Charge(BaseModel):
    n: int


async def test_outbox_answers_once_and_keeps_no_work_of_a_failure(
    memory_config: dict[str, Any], tmp_path: Path
) -> None:
    store = SqliteSagaStore(tmp_path / "p.db")
    app = StreamApp("charges", config=memory_config)
    participant = Participant(
        app, "charges", store=store, outbox=True, relay_interval=0.02, relay_claim=0.1
    )
    refused = {"send": True}

    @participant.handler(Charge, transactional=True)
    async def charge(cmd: Charge, tx: StoreTransaction) -> dict[str, int]:
        await tx.execute("INSERT INTO effects (n) VALUES (?)", cmd.n)
        if cmd.n == 2:
            raise StepFailed("card declined")
        return {"charged": cmd.n}

    deliver = participant._deliver

    async def flaky_deliver(reply: Any) -> None:
        if reply.command_id == "c-3" and refused["send"]:
            refused["send"] = False
            raise ConnectionError("broker refused")
        await deliver(reply)

    participant._deliver = flaky_deliver  # type: ignore[method-assign]
    got: Counter[str] = Counter()
    outcomes: dict[str, str | None] = {}
    driver = StreamApp("driver", config=memory_config)
    driver.binding_defaults("replies-in-0", {"destination": "charge-replies", "group": "d"})

    @driver.sink
    async def replies(msg: Message[bytes]) -> None:
        command_id = header_text(msg.headers, h.COMMAND_ID) or "?"
        got[command_id] += 1
        outcomes[command_id] = header_text(msg.headers, h.OUTCOME)

    async with store.transaction() as tx:
        await tx.execute("CREATE TABLE effects (n INTEGER NOT NULL)")
    async with app.run(), driver.run():
        for n in (1, 2, 3, 1):  # the second c-1 is a duplicate delivery
            await driver.send(
                "charges",
                {"n": n},
                headers={
                    h.SAGA_ID: f"s-{n}",
                    h.COMMAND: "Charge",
                    h.COMMAND_ID: f"c-{n}",
                    h.REPLY_TO: "charge-replies",
                },
            )
        async with asyncio.timeout(10):
            while sum(got.values()) < 3 or participant.duplicates < 1:
                await asyncio.sleep(0.02)
        async with store.transaction() as tx:
            effects = Counter(row[0] for row in await tx.fetch("SELECT n FROM effects"))
    await store.aclose()
    assert got == Counter({"c-1": 1, "c-2": 1, "c-3": 1})
    assert outcomes == {"c-1": h.SUCCESS, "c-2": h.FAILURE, "c-3": h.SUCCESS}
    assert effects == Counter({1: 1, 3: 1})  # the declined charge's insert was rolled back
    assert participant.duplicates == 1
    assert participant.relayed == 1  # c-3, whose first send was refused


def test_a_transactional_handler_needs_the_outbox(memory_config: dict[str, Any]) -> None:
    participant = Participant(StreamApp("p", config=memory_config), "charges")
    with pytest.raises(ValueError, match="outbox=True"):
        participant.handler(Charge, transactional=True)
