"""A participant with an outbox, SIGKILLed after its transaction committed and before its reply
went out, once for every command: every command still has exactly one effect and one reply.

The participant runs as its own process (participant_process.py) on Kafka with its store in
PostgreSQL or SQLite. ``SAGA_OUTBOX_KILLS`` sets how many commands (and kills) a run has.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamlib import Message, StreamApp
from streamlib.saga import PostgresSagaStore, SqliteSagaStore
from streamlib.saga import headers as h
from streamlib.saga._support import header_text
from streamlib.testing import BinderHarness

pytestmark = [pytest.mark.anyio, pytest.mark.kafka, pytest.mark.slow]

KILLS = int(os.environ.get("SAGA_OUTBOX_KILLS", "8"))
PROCESS = Path(__file__).with_name("participant_process.py")


async def start(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(PROCESS), env=env, stdout=asyncio.subprocess.PIPE, stderr=err
        )
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        line = await proc.stdout.readline()
    if line.strip() != b"ready":
        raise AssertionError(f"participant process did not start; see {log}")
    return proc


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_spec(
    request: pytest.FixtureRequest, tmp_path: Path, unique: Callable[[str], str]
) -> dict[str, str]:
    if request.param == "sqlite":
        return {"store": str(tmp_path / "charges.db")}
    url = request.getfixturevalue("postgres_url")
    return {"store": url, "schema": unique("outbox").replace("-", "_")}


async def test_participant_killed_between_commit_and_reply_answers_every_command_once(
    kafka_harness: BinderHarness, store_spec: dict[str, str], tmp_path: Path
) -> None:
    destination = kafka_harness.unique("charges")
    replies_topic = kafka_harness.unique("charge-replies")
    config: dict[str, Any] = dict(kafka_harness.binder_config())
    participant_config = {
        **config,
        # Static assignment: a restarted process gets its partition back at once.
        "default": {"consumer": {"auto-rebalance": False}},
        "bindings": {
            f"{destination.replace('-', '_')}_saga_commands-in-0": {"consumer": {"max-attempts": 1}}
        },
    }
    kill_file = tmp_path / "killed"
    env = {
        **os.environ,
        "SAGA_PARTICIPANT": json.dumps(
            {
                "config": participant_config,
                "destination": destination,
                "kill_file": str(kill_file),
                **store_spec,
            }
        ),
    }
    replies: Counter[str] = Counter()
    outcomes: dict[str, str | None] = {}
    driver = StreamApp("charge-driver", config=config)
    driver.binding_defaults(
        "charge_replies-in-0", {"destination": replies_topic, "group": "charge-driver"}
    )

    @driver.sink
    async def charge_replies(msg: Message[bytes]) -> None:
        command_id = header_text(msg.headers, h.COMMAND_ID) or "?"
        replies[command_id] += 1
        outcomes[command_id] = header_text(msg.headers, h.OUTCOME)

    log = tmp_path / "participant.log"
    started = time.monotonic()
    kills = 0
    async with driver.run():
        proc = await start(env, log)
        for n in range(KILLS):
            await driver.send(
                destination,
                {"n": n},
                key=f"s-{n}",
                headers={
                    h.SAGA_ID: f"s-{n}",
                    h.SAGA_STEP: "charge",
                    h.COMMAND: "Charge",
                    h.COMMAND_ID: f"c-{n}",
                    h.REPLY_TO: replies_topic,
                },
            )
        ids = [f"c-{n}" for n in range(KILLS)]
        async with asyncio.timeout(60 + 10 * KILLS):
            while not all(replies[i] for i in ids):
                try:
                    async with asyncio.timeout(0.2):
                        await proc.wait()
                except TimeoutError:
                    continue
                kills += 1
                proc = await start(env, log)
        # Every reply is marked sent once the last one arrived ...
        store = (
            PostgresSagaStore(store_spec["store"], schema=store_spec["schema"])
            if "schema" in store_spec
            else SqliteSagaStore(store_spec["store"])
        )
        async with asyncio.timeout(30):
            while await store.claim_outbox(now=time.time() + 3600, until=0.0):
                await asyncio.sleep(0.1)
        # ... and a command redelivered after a kill was a duplicate, not a second effect.
        async with store.transaction() as tx:
            rows = await tx.fetch("SELECT command_id FROM effects")
        effects = Counter(row[0] for row in rows)
        # The driver's consumer has seen the whole reply topic up to the last reply sent.
        await driver.send(replies_topic, {}, key="end", headers={h.COMMAND_ID: "end"})
        async with asyncio.timeout(30):
            while not replies["end"]:
                await asyncio.sleep(0.05)
        proc.kill()
        await proc.wait()
        if isinstance(store, PostgresSagaStore):
            conn_url, schema = store_spec["store"], store_spec["schema"]
            await store.aclose()
            import asyncpg

            conn = await asyncpg.connect(conn_url)
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await conn.close()
        else:
            await store.aclose()
    elapsed = time.monotonic() - started
    died_for = kill_file.read_text().split()
    print(
        f"\noutbox kill run ({'postgres' if 'schema' in store_spec else 'sqlite'}): "
        f"{KILLS} commands, {kills} kills after commit, "
        f"{sum(effects.values())} effects, {sum(replies[i] for i in ids)} replies, {elapsed:.1f}s"
    )
    assert kills == KILLS and sorted(died_for) == sorted(ids)
    assert effects == Counter({i: 1 for i in ids})
    assert {i: replies[i] for i in ids} == {i: 1 for i in ids}
    assert set(outcomes[i] for i in ids) == {h.SUCCESS}
