"""``streamlib dlq`` on real brokers: dead letters of a real app's poison messages are listed,
shown, filtered and replayed to where they came from, and a replay killed mid-way loses
nothing."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from dlq_support import (
    INPUT,
    OUTPUT,
    PoisonApp,
    command,
    dlq_size,
    json_lines,
    run,
    run_inline,
    wait_dlq_size,
    write_config,
)

from streamlib.testing import BinderHarness

pytestmark = pytest.mark.anyio


def original_of(harness: BinderHarness, destination: str, group: str) -> str:
    """Where a dead letter goes back to: Kafka's topic, RabbitMQ's group queue."""
    return destination if harness.name == "kafka" else f"{destination}.{group}"


async def test_poison_messages_are_listed_shown_and_replayed_to_their_destination(
    broker_harness: BinderHarness, tmp_path: Path
) -> None:
    destination, group = broker_harness.unique("dlq-orders"), "billing"
    config = write_config(broker_harness, tmp_path / "streamlib.yaml", destination, group)
    node = PoisonApp(config)
    node.poison = set(range(6))
    async with node.app.run():
        for seq in [*range(6), 100, 101]:
            tenant = "a" if seq in (0, 1) else "b"
            await node.app.send(OUTPUT, {"seq": seq}, headers={"tenant": tenant})
        await node.wait_handled({100, 101}, broker_harness.timeout)
        await wait_dlq_size(config, 6, broker_harness.timeout)

        [row] = json_lines(
            (await run("list", "--config", str(config), "--json", cwd=tmp_path)).stdout
        )
        assert row["binding"] == INPUT
        assert row["count"] == 6
        assert row["exceptions"] == {"builtins.ValueError": 3, "builtins.LookupError": 3}
        assert row["oldest"] is not None and row["oldest"] <= row["newest"]
        table = await run_inline("list", "--config", str(config))
        assert " 6 " in table and "builtins.ValueError" in table, table

        shown = json_lines(
            (await run("show", INPUT, "--config", str(config), "--json", cwd=tmp_path)).stdout
        )
        assert sorted(orjson.loads(s["payload"])["seq"] for s in shown) == list(range(6))
        for letter in shown:
            seq = orjson.loads(letter["payload"])["seq"]
            kind = "ValueError" if seq % 2 == 0 else "LookupError"
            assert letter["exception"] == f"builtins.{kind}"
            assert letter["reason"] == f"bad {'even' if seq % 2 == 0 else 'odd'} {seq}"
            assert letter["original"] == original_of(broker_harness, destination, group)
            assert letter["times_dead_lettered"] == 1
            assert letter["replay_count"] == 0
            assert "x-exception-stacktrace" not in letter["headers"]

        async def seqs(*filters: str) -> list[int]:
            out = await run_inline("show", INPUT, "--config", str(config), "--json", *filters)
            return sorted(orjson.loads(s["payload"])["seq"] for s in json_lines(out))

        assert await seqs("--exception", "ValueError") == [0, 2, 4]
        assert await seqs("--exception", "builtins.LookupError") == [1, 3, 5]
        assert await seqs("--header", "tenant=a") == [0, 1]
        assert await seqs("--header", "tenant=a", "--exception", "LookupError") == [1]
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert await seqs("--since", later) == []
        assert await seqs("--until", later) == list(range(6))
        text = await run_inline("show", INPUT, "--config", str(config), "--limit", "1")
        assert "exception  builtins." in text and "1 message(s) shown" in text, text

        dry = await run_inline("replay", INPUT, "--config", str(config), "--dry-run")
        assert "6 message(s) would be replayed" in dry, dry
        assert await dlq_size(config) == 6

        node.poison.clear()  # the bug is fixed
        done = await run("replay", INPUT, "--config", str(config), cwd=tmp_path)
        assert f"replayed 6 message(s) from {row['dlq']}" in done.stdout, done.stdout
        await node.wait_handled(set(range(6)), broker_harness.timeout)
        await asyncio.sleep(broker_harness.settle)
    replayed = sorted(h for h in node.handled if h[0] < 100)
    assert replayed == [(seq, 1) for seq in range(6)], "each replayed once, x-replay-count 1"
    [after] = json_lines(
        (await run("list", "--config", str(config), "--json", cwd=tmp_path)).stdout
    )
    assert after["count"] == 0


async def test_a_replay_killed_mid_way_and_run_again_delivers_every_dead_letter(
    broker_harness: BinderHarness, tmp_path: Path
) -> None:
    destination, group = broker_harness.unique("dlq-kill"), "billing"
    config = write_config(broker_harness, tmp_path / "streamlib.yaml", destination, group)
    count = 30
    node = PoisonApp(config)
    node.poison = set(range(count))
    async with node.app.run():
        for seq in range(count):
            await node.app.send(OUTPUT, {"seq": seq})
        await wait_dlq_size(config, count, broker_harness.timeout)
        node.poison.clear()

        # 10 a second: the replay takes 3 s, and the kill lands once 5 have arrived.
        replay = await asyncio.create_subprocess_exec(
            *command("replay", INPUT, "--config", str(config), "--rate", "10"),
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(broker_harness.timeout):
                while len(node.handled) < 5:
                    await asyncio.sleep(0.01)
        finally:
            os.kill(replay.pid, signal.SIGKILL)
            await replay.wait()
        assert replay.returncode == -signal.SIGKILL
        await asyncio.sleep(broker_harness.settle)  # copies sent before the kill arrive
        arrived_before_kill = {seq for seq, _ in node.handled}
        assert 5 <= len(arrived_before_kill) < count, "killed mid-way"
        # Every message whose copy did not arrive is still in the DLQ; so may be the one
        # whose copy was sent but not yet removed.
        left = await dlq_size(config)
        assert count - len(arrived_before_kill) <= left <= count - len(arrived_before_kill) + 1

        await run("replay", INPUT, "--config", str(config), cwd=tmp_path)
        await node.wait_handled(set(range(count)), broker_harness.timeout)
        await asyncio.sleep(broker_harness.settle)
    times = Counter(seq for seq, _ in node.handled)
    assert set(times) == set(range(count)), "every dead letter reached its destination"
    # Rate-limited, the replay confirms and removes each before it sends the next: the one
    # in flight at the kill is the only one that can arrive twice.
    assert sum(times.values()) - count <= 1, times
    [after] = json_lines(
        (await run("list", "--config", str(config), "--json", cwd=tmp_path)).stdout
    )
    assert after["count"] == 0


async def test_purge_asks_first_then_drops_every_dead_letter(
    broker_harness: BinderHarness, tmp_path: Path
) -> None:
    destination, group = broker_harness.unique("dlq-purge"), "billing"
    config = write_config(broker_harness, tmp_path / "streamlib.yaml", destination, group)
    node = PoisonApp(config)
    node.poison = {0, 1, 2}
    async with node.app.run():
        for seq in range(3):
            await node.app.send(OUTPUT, {"seq": seq})
        await wait_dlq_size(config, 3, broker_harness.timeout)
    refused = await run("purge", INPUT, "--config", str(config), cwd=tmp_path, stdin="n\n", code=1)
    assert "drop 3 message(s)" in refused.stdout and "nothing was dropped" in refused.stdout
    assert await dlq_size(config) == 3
    done = await run("purge", INPUT, "--config", str(config), cwd=tmp_path, stdin="y\n")
    assert "dropped 3 message(s)" in done.stdout, done.stdout
    assert await dlq_size(config) == 0
    again = await run_inline("purge", INPUT, "--config", str(config), "--yes")
    assert "is empty" in again
