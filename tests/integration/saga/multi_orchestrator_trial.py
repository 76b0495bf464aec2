"""On demand: three orchestrator processes share sagas on PostgreSQL over Kafka or RabbitMQ
while one of them is SIGKILLed every few seconds and restarted under a new instance name.

    .venv/bin/python tests/integration/saga/multi_orchestrator_trial.py --sagas 500
    .venv/bin/python tests/integration/saga/multi_orchestrator_trial.py --broker rabbit --sagas 200

The orders processes (orders_process.py) share one PostgreSQL store and the request and reply
destinations: on Kafka three partitions, one per process (a killed process's partitions wait
for it to come back); on RabbitMQ one queue each that the three consume from. A killed
process's sagas are taken over by the others once their leases expire (``--lease`` seconds).
Payments and inventory run in this process and log their work. Prints the figures and exits 1
when a saga is stuck, compensated twice, has a step done twice, or a participant worked twice.
Kafka and PostgreSQL are found as the tests find them (environment, then the launcher).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

_ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(_ROOT / "tests"), str(_ROOT / "examples" / "saga"), str(Path(__file__).parent)]

from model import Order  # noqa: E402
from saga_system import build_system  # noqa: E402
from support import launcher  # noqa: E402
from test_saga_crash_trial import OrdersProcess  # noqa: E402
from worklog import read_counts  # noqa: E402

from streamlib import StreamApp  # noqa: E402
from streamlib.saga import PostgresSagaStore, SagaState, SqliteSagaStore  # noqa: E402
from streamlib.testing import brokers  # noqa: E402

PROCESSES = 3


async def trial(args: argparse.Namespace, work: Path, address: str, url: str) -> dict[str, Any]:
    """Run the trial; its figures (``failures`` lists what went wrong)."""
    kafka = args.broker == "kafka"
    rng = random.Random(args.seed)
    binder = (
        {"type": "kafka", "bootstrap-servers": address}
        if kafka
        else {"type": "rabbit", "url": address}
    )
    config: dict[str, Any] = {"binders": {args.broker: binder}, "default-binder": args.broker}
    system = build_system(
        config,
        brokers.unique_name,
        payments_store=SqliteSagaStore(work / "payments.db"),
        inventory_store=SqliteSagaStore(work / "inventory.db"),
        stock=1_000_000,
        work_dir=work,
    )
    names = system.names
    schema = brokers.unique_name("trial").replace("-", "_")
    store = PostgresSagaStore(url, schema=schema)
    await store.list()  # creates the tables before three processes race for it
    driver_config = {
        **config,
        "bindings": {
            names["requests"]: {"producer": {"required-groups": ["orders"], "partition-count": 3}}
        },
    }
    generation = Counter[int]()

    def process(k: int) -> OrdersProcess:
        orders_config: dict[str, Any] = {**config, "saga": {"events-destination": names["events"]}}
        if kafka:
            orders_config["instance-count"] = PROCESSES
            orders_config["instance-index"] = k
            orders_config["default"] = {"consumer": {"auto-rebalance": False}}
        spec = {
            "config": orders_config,
            "names": names,
            "store": url,
            "schema": schema,
            "instance": f"orders-{k}-{generation[k]}",
            "lease": args.lease,
        }
        return OrdersProcess(spec, work / f"orders-{k}.log")

    driver = StreamApp("trial-driver", config=driver_config)
    procs = [process(k) for k in range(PROCESSES)]
    kills = 0
    aimed = [0]
    started = time.monotonic()
    ids = [f"m-{n}" for n in range(args.sagas)]
    async with system.payments.app.run(), system.inventory.app.run(), driver.run():
        await asyncio.gather(*(p.start() for p in procs))
        sending_done = asyncio.Event()

        async def send_all() -> None:
            for n, order_id in enumerate(ids):
                quantity = 5_000_000 if n % 3 == 2 else 1  # every third saga compensates
                order = Order(
                    order_id=order_id, customer=f"c-{n}", amount=10.0, sku="book", quantity=quantity
                )
                await driver.send(names["requests"], order, key=order_id)
                await asyncio.sleep(1 / args.rate)
            sending_done.set()

        async def killer() -> None:
            nonlocal kills
            while not sending_done.is_set():
                await asyncio.sleep(args.kill_every)
                k = rng.randrange(PROCESSES)
                # Aim: kill while the process holds the lease of a saga it works on.
                instance = f"orders-{k}-{generation[k]}"
                aim = time.monotonic() + 2.0
                while time.monotonic() < aim:
                    unfinished = await store.list((SagaState.RUNNING, SagaState.COMPENSATING))
                    if any(r.owner == instance for r in unfinished):
                        aimed[0] += 1
                        break
                await procs[k].kill()
                kills += 1
                generation[k] += 1
                procs[k] = process(k)
                await procs[k].start()

        await asyncio.gather(send_all(), killer())
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline:
            records = await store.list()
            if len(records) == len(ids) and all(r.state.is_final for r in records):
                break
            await asyncio.sleep(0.5)
        for p in procs:
            await p.kill()
    elapsed = time.monotonic() - started

    records = {r.id: r for r in await store.list()}
    states = Counter(records[i].state.value if i in records else "missing" for i in ids)
    stuck = [i for i in ids if i not in records or not records[i].state.is_final]
    twice_compensated: list[str] = []
    twice_done: list[str] = []
    resumed = 0
    for saga_id in ids:
        history = await store.history(saga_id)
        resumed += sum(1 for e in history if e.event == "resumed")
        compensated = Counter(e.step for e in history if e.event == "step compensated")
        done = Counter(e.step for e in history if e.event == "step done")
        twice_compensated += [f"{saga_id}/{s}" for s, n in compensated.items() if n > 1]
        twice_done += [f"{saga_id}/{s}" for s, n in done.items() if n > 1]
    logs = "".join((work / f"orders-{k}.log").read_text() for k in range(PROCESSES))
    work_counts = read_counts(work / "payments.log") + read_counts(work / "inventory.log")
    repeated = {k: n for k, n in work_counts.items() if n > 1}
    duplicates = system.payments.participant.duplicates + system.inventory.participant.duplicates
    await store.aclose()
    await drop_schema(url, schema)
    return {
        "broker": args.broker,
        "sagas": len(ids),
        "processes": PROCESSES,
        "kills": kills,
        "kills_while_holding_a_lease": aimed[0],
        "lease_s": args.lease,
        "states": dict(states),
        "stuck": len(stuck),
        "compensated_twice": len(twice_compensated),
        "steps_done_twice": len(twice_done),
        "participant_work_repeated": len(repeated),
        "duplicate_commands_answered_from_dedupe": duplicates,
        "resumed_after_takeover_or_restart": resumed,
        "writes_refused_to_a_stale_owner": logs.count("this one stops"),
        "leases_lost_while_working": logs.count("lease not renewed"),
        "seconds": round(elapsed, 1),
        "failures": {
            "stuck": stuck[:10],
            "compensated_twice": twice_compensated[:10],
            "done_twice": twice_done[:10],
            "repeated": [" ".join(k) for k in list(repeated)[:10]],
        },
    }


async def drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=["kafka", "rabbit"], default="kafka")
    parser.add_argument("--sagas", type=int, default=500)
    parser.add_argument("--rate", type=float, default=10.0, help="sagas started per second")
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between kills")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--settle", type=float, default=120.0, help="seconds to wait at the end")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--work", type=Path, help="keep the logs here (default: a temp dir)")
    args = parser.parse_args()
    env = brokers.KAFKA_ENV if args.broker == "kafka" else brokers.RABBIT_ENV
    address = os.environ.get(env) or launcher.launcher_address(args.broker)
    url = os.environ.get(brokers.POSTGRES_ENV) or launcher.launcher_address("postgres")
    if not address or not url:
        print(f"needs {args.broker} and PostgreSQL: python3 tools/brokers.py up", file=sys.stderr)
        return 2
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        figures = asyncio.run(trial(args, args.work, address, url))
    else:
        with TemporaryDirectory(prefix="saga-trial-") as tmp:
            figures = asyncio.run(trial(args, Path(tmp), address, url))
    print(json.dumps(figures, indent=2))
    return 1 if any(figures["failures"].values()) else 0


def arguments(**values: Any) -> argparse.Namespace:
    """The trial's settings: the command line's defaults with ``values`` applied."""
    defaults = {
        "broker": "kafka",
        "sagas": 500,
        "rate": 10.0,
        "kill_every": 3.0,
        "lease": 2.0,
        "settle": 120.0,
        "seed": None,
    }
    return argparse.Namespace(**{**defaults, **values})


if __name__ == "__main__":
    sys.exit(main())
