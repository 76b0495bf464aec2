"""Several orchestrator instances on one store: shared replies, takeover, fencing.

Instances share a store and a reply destination (same app name, so one consumer group); each
reply goes to one of them, whichever holds nothing of the saga.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import pytest
from pydantic import BaseModel

from streamlib import StreamApp
from streamlib.saga import MemorySagaStore, Orchestrator, Participant, Saga, SagaState

pytestmark = pytest.mark.anyio


class Data(BaseModel):
    n: int
    done: list[str] = []


class Work(BaseModel):
    n: int


def build(store: MemorySagaStore, config: dict[str, Any], instances: int, lease: float) -> Any:
    saga = Saga("work", Data)
    runs: Counter[tuple[str, int]] = Counter()
    gate: dict[int, asyncio.Event] = {}

    @saga.local()
    async def first(data: Data) -> Data:
        runs["first", data.n] += 1
        if data.n in gate and runs["first", data.n] == 1:
            await gate[data.n].wait()  # the first run stalls until the test lets it go
        return data.model_copy(update={"done": [*data.done, "first"]})

    @saga.remote(destination="workers", timeout=30)
    def remote(data: Data) -> Work:
        return Work(n=data.n)

    @saga.local()
    async def last(data: Data) -> Data:
        runs["last", data.n] += 1
        return data.model_copy(update={"done": [*data.done, "last"]})

    apps = [StreamApp("orders", config=config) for _ in range(instances)]
    orchestrators = [
        Orchestrator(app, [saga], store=store, instance=f"i{k}", lease=lease, tick=0.02)
        for k, app in enumerate(apps)
    ]
    workers = StreamApp("workers", config=config)
    participant = Participant(workers, "workers", store=MemorySagaStore())
    handled: Counter[int] = Counter()
    replies_gate = asyncio.Event()
    replies_gate.set()
    gate[-1] = replies_gate

    @participant.handler(Work)
    async def work(cmd: Work) -> None:
        await replies_gate.wait()
        handled[cmd.n] += 1

    return saga, apps, orchestrators, workers, runs, gate, handled


async def test_any_instance_takes_the_replies_of_sagas_another_started(
    memory_config: dict[str, Any],
) -> None:
    store = MemorySagaStore()
    saga, apps, orchestrators, workers, runs, gate, handled = build(store, memory_config, 3, 5.0)
    async with AsyncExitStack() as stack:
        for app in (workers, *apps):
            await stack.enter_async_context(app.run())
        # Every saga is started by instance 0, which then stops: the others get the replies.
        gate[-1].clear()
        ids = [await orchestrators[0].start(saga, Data(n=n)) for n in range(30)]
        await apps[0].stop()
        gate[-1].set()
        records = [await orchestrators[1].wait(i) for i in ids]
    assert {r.state for r in records} == {SagaState.COMPLETED}
    assert all(r.data["done"] == ["first", "last"] for r in records)
    assert set(handled.values()) == {1} and set(runs.values()) == {1}
    assert all(r.owner is None for r in records)
    applied = [o.replies_applied for o in orchestrators]
    assert applied[0] == 0 and applied[1] + applied[2] == 30, applied
    assert sum(o.ignored_replies for o in orchestrators) == 0


async def test_a_stalled_instance_is_taken_over_and_cannot_write_after_it(
    memory_config: dict[str, Any],
) -> None:
    store = MemorySagaStore()
    saga, apps, orchestrators, workers, runs, gate, handled = build(store, memory_config, 2, 0.3)
    stalled, other = orchestrators
    gate[1] = asyncio.Event()
    async with AsyncExitStack() as stack:
        for app in (workers, *apps):
            await stack.enter_async_context(app.run())
        start = asyncio.create_task(stalled.start(saga, Data(n=1), saga_id="s-1"))
        while runs["first", 1] == 0:
            await asyncio.sleep(0.01)
        # The instance stalls (a long pause of its process): its lease lapses ...
        await apps[0].stop()
        await store.expire_leases(stalled.instance)
        # ... and the other instance takes the saga over and finishes it.
        record = await other.wait("s-1", timeout=10)
        history_before = await store.history("s-1")
        gate[1].set()
        await start
        after = await store.get("s-1")
        history_after = await store.history("s-1")
    assert record.state is SagaState.COMPLETED
    assert record.data["done"] == ["first", "last"]
    # The stalled instance's step ended after the takeover: its write was refused.
    assert stalled.lost_leases == 1
    assert after == record and history_after == history_before
    assert runs["first", 1] == 2 and runs["last", 1] == 1 and handled[1] == 1
    assert [e.event for e in history_after].count("resumed") == 1


async def test_a_step_longer_than_the_lease_keeps_it_while_its_instance_lives(
    memory_config: dict[str, Any],
) -> None:
    store = MemorySagaStore()
    saga, apps, orchestrators, workers, runs, gate, handled = build(store, memory_config, 2, 0.2)
    working, other = orchestrators
    gate[2] = asyncio.Event()
    async with AsyncExitStack() as stack:
        for app in (workers, *apps):
            await stack.enter_async_context(app.run())
        start = asyncio.create_task(working.start(saga, Data(n=2), saga_id="s-2"))
        # Five leases long: renewals keep it; the other instance never takes it.
        await asyncio.sleep(1.0)
        held = await store.get("s-2")
        gate[2].set()
        await start
        record = await other.wait("s-2", timeout=10)
    assert held is not None and held.owner == working.instance
    assert record.state is SagaState.COMPLETED
    assert runs["first", 2] == 1 and handled[2] == 1
    assert working.lost_leases == other.lost_leases == 0
