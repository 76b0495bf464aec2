"""A batch consumer SIGKILLed in the middle of a batch, then restarted: every record is
handled at least once, and the group never committed past a record not yet handled."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from app_process import create_topics, ready, start_app, stop_all
from batch_binding import committed, produce, wait_committed

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]

APP = Path(__file__).with_name("batch_app.py")
MESSAGES = 3000
TIMEOUT = 45.0


def handled(path: Path) -> list[tuple[int, int]]:
    out = []
    for line in path.read_text().splitlines() if path.exists() else ():
        parts = line.split()
        if len(parts) == 2:  # a line cut by the kill is incomplete
            out.append((int(parts[0]), int(parts[1])))
    return out


async def test_a_consumer_killed_mid_batch_loses_nothing_and_commits_only_what_it_handled(
    kafka_bootstrap: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    topic, group = unique("batch-kill"), unique("batch-kill")
    await create_topics(kafka_bootstrap, {topic: 2})
    await produce(kafka_bootstrap, topic, range(MESSAGES), key=lambda seq: b"k%d" % (seq % 8))
    log = tmp_path / "handled.log"
    first = start_app(APP, kafka_bootstrap, topic, group, str(log))
    procs = [first]
    try:
        await ready(first, "the consumer")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while len(handled(log)) < 700 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        before = handled(log)
        assert len(before) < MESSAGES, "the kill came after everything was handled"
        at_kill = await committed(kafka_bootstrap, group)
        assert at_kill, "nothing was committed before the kill"
        for partition, offset in at_kill.items():
            missing = set(range(offset)) - {o for p, o in before if p == partition}
            assert not missing, f"partition {partition}: committed {offset} past {min(missing)}"

        second = start_app(APP, kafka_bootstrap, topic, group, str(log))
        procs.append(second)
        await ready(second, "the restarted consumer")
        while len(set(handled(log))) < MESSAGES and loop.time() < deadline:
            await asyncio.sleep(0.1)
        counts: dict[int, int] = {}
        for partition, offset in set(handled(log)):
            counts[partition] = max(counts.get(partition, 0), offset + 1)
        await wait_committed(kafka_bootstrap, group, counts, TIMEOUT)
        second.send_signal(signal.SIGTERM)
        await asyncio.to_thread(second.wait, 30)
    finally:
        stop_all(procs)
    events = handled(log)
    assert len(set(events)) == MESSAGES == sum(counts.values())
    for partition in counts:
        offsets = {o for p, o in events if p == partition}
        assert offsets == set(range(counts[partition]))
    print(f"\nbatch kill: {MESSAGES} sent, {len(events)} handled, {len(before)} before the kill")
