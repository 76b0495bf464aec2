"""Crash trials: the orchestrator process is killed with SIGKILL at a random moment of every
saga and restarted; every saga still ends completed or compensated, exactly once.

The orders service runs as its own process (orders_process.py) on a SQLite store; payments
and inventory run in the test process and count their work in files.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from model import Order
from saga_system import build_system
from worklog import read_counts

from streamlib import StreamApp
from streamlib.saga import SagaState, SqliteSagaStore
from streamlib.testing import BinderHarness

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SAGAS = 30
PER_ROUND = 1
PROCESS = Path(__file__).with_name("orders_process.py")


class OrdersProcess:
    """The orders service in a child process that can be killed and started again."""

    def __init__(self, spec: dict[str, Any], log: Path) -> None:
        self.env = {**os.environ, "SAGA_TRIAL": json.dumps(spec)}
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.kills = 0

    async def start(self) -> None:
        with self.log.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(PROCESS),
                env=self.env,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        assert self.proc.stdout is not None
        async with asyncio.timeout(60):
            line = await self.proc.stdout.readline()
        if line.strip() != b"ready":
            raise AssertionError(f"orders process did not start; see {self.log}")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()
        self.kills += 1


def run(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


async def saga_duration(driver: StreamApp, store: SqliteSagaStore, requests: str) -> float:
    """How long a saga takes on this broker (a warm-up saga that is not killed): the window
    in which the kills land."""
    warm_up = Order(order_id="warm-up", customer="w", amount=1.0, sku="book", quantity=1)
    await driver.send(requests, warm_up, key=warm_up.order_id)
    await wait_final(store, [warm_up.order_id], timeout=60)
    history = await store.history(warm_up.order_id)
    return history[-1].at - history[0].at


COMPENSATING_OR_LATER = {SagaState.COMPENSATING, SagaState.COMPENSATED}


async def wait_state(
    store: SqliteSagaStore, saga_id: str, states: set[SagaState], timeout: float
) -> None:
    """Until the saga exists in one of ``states``."""
    async with asyncio.timeout(timeout):
        while True:
            record = await store.get(saga_id)
            if record is not None and record.state in states:
                return
            await asyncio.sleep(0.001)


async def wait_final(store: SqliteSagaStore, ids: list[str], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            records = [await store.get(i) for i in ids]
            if all(r is not None and r.state.is_final for r in records):
                return
            await asyncio.sleep(0.05)


async def test_killed_orchestrator_finishes_every_saga_exactly_once(
    broker_harness: BinderHarness, tmp_path: Path
) -> None:
    rng = random.Random()
    config = dict(broker_harness.binder_config())
    system = build_system(
        config,
        broker_harness.unique,
        payments_store=SqliteSagaStore(tmp_path / "payments.db"),
        inventory_store=SqliteSagaStore(tmp_path / "inventory.db"),
        stock=1_000,
        work_dir=tmp_path,
    )
    names = system.names
    config["bindings"] = {names["requests"]: {"producer": {"required-groups": ["orders"]}}}
    config["saga"] = {"events-destination": names["events"]}
    orders_config = dict(config)
    if broker_harness.name == "kafka":
        # Static partition assignment: a restarted process need not wait for the killed
        # member's session to expire before it gets its partitions back.
        orders_config["default"] = {"consumer": {"auto-rebalance": False}}
    store_path = tmp_path / "orders.db"
    orders = OrdersProcess(
        {"config": orders_config, "names": names, "store": str(store_path)},
        tmp_path / "orders.log",
    )
    driver = StreamApp("trial-driver", config=config)
    store = SqliteSagaStore(store_path)
    started = time.monotonic()
    async with system.payments.app.run(), system.inventory.app.run(), driver.run():
        await orders.start()
        window = await saga_duration(driver, store, names["requests"])
        ids: list[str] = []
        kill_times: dict[str, float] = {}
        for first in range(0, SAGAS, PER_ROUND):
            batch = []
            for n in range(first, min(first + PER_ROUND, SAGAS)):
                # Every third order asks for more than the stock: its saga is compensated.
                quantity = 5_000 if n % 3 == 2 else 1
                order = Order(
                    order_id=f"t-{n}", customer=f"c-{n}", amount=10.0, sku="book", quantity=quantity
                )
                await driver.send(names["requests"], order, key=order.order_id)
                batch.append(order.order_id)
            # Kill at a random moment after the saga started (it lasts a few milliseconds);
            # a saga that fails is killed while it compensates, most of the time.
            if quantity > 1:
                await wait_state(store, batch[-1], COMPENSATING_OR_LATER, timeout=60)
                await asyncio.sleep(rng.uniform(0, window / 4))
            else:
                await wait_state(store, batch[-1], set(SagaState), timeout=60)
                await asyncio.sleep(rng.uniform(0, window))
            kill_times[batch[-1]] = time.time()
            await orders.kill()
            await orders.start()
            await wait_final(store, batch, timeout=60)
            ids.extend(batch)
            history = await store.history(batch[-1])
            if history[-1].at < kill_times[batch[-1]]:
                # It ended before the kill: aim the next kills earlier.
                window = 0.8 * (history[-1].at - history[0].at)
        await orders.kill()
        duplicates = (
            system.payments.participant.duplicates + system.inventory.participant.duplicates
        )
    elapsed = time.monotonic() - started

    records = [await store.get(i) for i in ids]
    states = Counter(r.state.value for r in records if r is not None)
    resumed = 0
    killed_after_end = 0
    resumed_compensating = 0
    twice: list[str] = []
    for r in records:
        assert r is not None
        history = await store.history(r.id)
        resumed += sum(1 for e in history if e.event == "resumed")
        failed_at = next((i for i, e in enumerate(history) if e.event == "step failed"), None)
        if failed_at is not None and any(e.event == "resumed" for e in history[failed_at:]):
            resumed_compensating += 1
        ended = next(e.at for e in history if e.event in ("completed", "compensated"))
        killed_after_end += r.id in kill_times and ended < kill_times[r.id]
        compensated = Counter(e.step for e in history if e.event == "step compensated")
        twice.extend(f"{r.id}/{step}" for step, n in compensated.items() if n > 1)
    await store.aclose()
    payments = read_counts(tmp_path / "payments.log")
    inventory = read_counts(tmp_path / "inventory.log")
    work = payments + inventory
    repeated = {k: n for k, n in work.items() if n > 1}
    print(
        f"\ncrash trial on {broker_harness.name}: {len(ids)} sagas, {orders.kills} kills "
        f"(the last within {window * 1000:.0f} ms of its saga's start), "
        f"{dict(states)}, {resumed} resumed ({resumed_compensating} while compensating), "
        f"{killed_after_end} killed after they ended, "
        f"{duplicates} duplicate commands answered from dedupe records, "
        f"{len(repeated)} repeated work, {len(twice)} compensated twice, {elapsed:.1f}s"
    )

    assert set(states) <= {SagaState.COMPLETED.value, SagaState.COMPENSATED.value}, states
    assert sum(states.values()) == SAGAS
    assert states[SagaState.COMPENSATED.value] >= SAGAS // 3
    assert twice == []
    assert repeated == {}
    for r in records:
        assert r is not None
        reserved = ("reserve-credit", r.id) in work
        released = ("release-credit", r.id) in work
        if r.state is SagaState.COMPLETED:
            assert reserved and not released and ("reserve-stock", r.id) in work, r.id
        else:
            assert released or not reserved, r.id
            assert ("reserve-stock", r.id) not in work or ("release-stock", r.id) in work, r.id

    # The CLI reads the trial's store.
    cli = [sys.executable, "-m", "streamlib", "saga"]
    listing = await asyncio.to_thread(run, [*cli, "list", "--store", str(store_path)])
    assert f"{SAGAS + 1} saga(s)" in listing  # and the warm-up
    assert all(i in listing for i in ids)
    assert listing.count("completed") == states[SagaState.COMPLETED.value] + 1
    failed = next(r for r in records if r is not None and r.state is SagaState.COMPENSATED)
    shown = await asyncio.to_thread(run, [*cli, "show", failed.id, "--store", str(store_path)])
    assert "state    compensated" in shown
    assert "step compensated" in shown and "reserve_credit" in shown
    print(listing.splitlines()[0])
    print("\n".join(listing.splitlines()[1:4]))
    print(shown)
