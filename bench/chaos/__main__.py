"""``python -m bench.chaos [run|backlog|all] [options]``: see ``bench/chaos/__init__.py``.

Needs the variables ``tools/brokers.py env`` prints for a broker pair started with its own
``STREAMLIB_BROKERS_DIR`` and ports (``make chaos`` does that); refuses the default pair, since
the run restarts brokers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from pathlib import Path

from .checker import Verdict
from .driver import FAULT_WEIGHTS, Options, Run, say
from .sides import KafkaSide, RabbitSide, Side, quiet_clients
from .workload import Workload

DEFAULT_DIR = "/tmp/streamlib-brokers"
SHARED_PORTS = {"STREAMLIB_KAFKA_PORT": "9092", "STREAMLIB_RABBIT_PORT": "5672"}


def refuse_shared_brokers() -> str | None:
    """Why the environment may point at the shared broker pair, or None when it is our own."""
    brokers_dir = os.environ.get("STREAMLIB_BROKERS_DIR", "").rstrip("/")
    if not brokers_dir or brokers_dir == DEFAULT_DIR:
        return f"STREAMLIB_BROKERS_DIR must name a directory other than {DEFAULT_DIR}"
    for name, shared in SHARED_PORTS.items():
        if os.environ.get(name, shared) == shared:
            return f"{name} must be set to a port other than {shared}"
    needed = (
        "STREAMLIB_TEST_KAFKA",
        "STREAMLIB_TEST_KAFKA_PROXIED",
        "STREAMLIB_TEST_KAFKA_PROXIED_TARGET",
        "STREAMLIB_TEST_RABBIT",
        "STREAMLIB_BROKERS_TOOL",
    )
    missing = [name for name in needed if not os.environ.get(name)]
    if missing:
        return f'missing {", ".join(missing)} (eval "$(python3 tools/brokers.py env)")'
    kafka_port = os.environ["STREAMLIB_TEST_KAFKA"].rpartition(":")[2]
    if kafka_port != os.environ["STREAMLIB_KAFKA_PORT"]:
        return "STREAMLIB_TEST_KAFKA does not match STREAMLIB_KAFKA_PORT"
    if f":{os.environ['STREAMLIB_RABBIT_PORT']}/" not in os.environ["STREAMLIB_TEST_RABBIT"]:
        return "STREAMLIB_TEST_RABBIT does not match STREAMLIB_RABBIT_PORT"
    return None


def side_for(broker: str, workload: Workload) -> tuple[Side, int]:
    """The broker's side of the run and the port of its fault proxy."""
    if broker == "kafka":
        proxied = os.environ["STREAMLIB_TEST_KAFKA_PROXIED"]
        side: Side = KafkaSide(
            workload,
            os.environ["STREAMLIB_TEST_KAFKA"],
            os.environ["STREAMLIB_TEST_KAFKA_PROXIED_TARGET"],
        )
        return side, int(proxied.rpartition(":")[2])
    rabbit_port = int(os.environ["STREAMLIB_RABBIT_PORT"])
    proxy_port = int(os.environ.get("STREAMLIB_CHAOS_RABBIT_PROXY_PORT", rabbit_port + 10000))
    side = RabbitSide(
        workload, os.environ["STREAMLIB_TEST_RABBIT"], os.environ["STREAMLIB_BROKERS_TOOL"]
    )
    return side, proxy_port


async def chaos(brokers: list[str], opts: Options) -> list[Verdict]:
    verdicts = []
    for broker in brokers:
        workload = Workload(secrets.token_hex(4), opts.messages, opts.keys, opts.reject_every)
        side, proxy_port = side_for(broker, workload)
        say(f"=== chaos run on {broker}: {opts.messages} messages, seed {opts.seed}")
        verdicts.append(await Run(side, workload, opts, proxy_port).execute())
        say("\n".join(verdicts[-1].lines()))
    return verdicts


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    p.add_argument("mode", nargs="?", default="all", choices=["run", "backlog", "all"])
    p.add_argument("--broker", default="all", choices=["kafka", "rabbit", "all"])
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--keys", type=int, default=64)
    p.add_argument(
        "--reject-every",
        type=int,
        default=1000,
        help="make the broker refuse the output of every n-th input (0: none)",
    )
    p.add_argument("--seed", type=int, default=13)
    p.add_argument(
        "--faults",
        default=",".join(FAULT_WEIGHTS),
        help=f"comma-separated, of {', '.join(FAULT_WEIGHTS)}; empty for none",
    )
    p.add_argument("--no-faults", action="store_true", help="no faults and no refused outputs")
    p.add_argument("--processors", type=int, default=2)
    p.add_argument("--max-processors", type=int, default=3)
    p.add_argument("--produce-seconds", type=float, default=300)
    p.add_argument("--chaos-seconds", type=float, default=600)
    p.add_argument("--drain-seconds", type=float, default=120)
    p.add_argument("--handler-ms", type=float, default=0, help="sleep in each handler call")
    p.add_argument(
        "--direct", action="store_true", help="processors bypass the proxy (no cut faults)"
    )
    p.add_argument("--logs", type=Path, default=Path("/tmp/streamlib-chaos-logs"))
    p.add_argument("--backlog-messages", type=int, default=1_000_000)
    p.add_argument("--backlog-rabbit-messages", type=int, default=200_000)
    p.add_argument("--backlog-seconds", type=float, default=120)
    return p


def main(argv: list[str]) -> int:
    ns = parser().parse_args(argv)
    why = refuse_shared_brokers()
    if why:
        print(f"bench.chaos: refusing to run: {why}", file=sys.stderr)
        return 2
    quiet_clients()
    brokers = ["kafka", "rabbit"] if ns.broker == "all" else [ns.broker]
    faults = tuple(f for f in ns.faults.split(",") if f and not (ns.direct and f == "cut"))
    unknown = set(faults) - set(FAULT_WEIGHTS)
    if unknown:
        print(f"bench.chaos: unknown faults {sorted(unknown)}", file=sys.stderr)
        return 2
    opts = Options(
        messages=ns.messages,
        keys=ns.keys,
        reject_every=0 if ns.no_faults else ns.reject_every,
        seed=ns.seed,
        processors=ns.processors,
        max_processors=ns.max_processors,
        faults=() if ns.no_faults else faults,
        produce_seconds=ns.produce_seconds,
        chaos_seconds=ns.chaos_seconds,
        drain_seconds=ns.drain_seconds,
        handler_ms=ns.handler_ms,
        direct=ns.direct,
        logs=ns.logs,
    )
    status = 0
    if ns.mode in ("run", "all"):
        verdicts = asyncio.run(chaos(brokers, opts))
        say("=== chaos summary")
        for verdict in verdicts:
            say("\n".join(verdict.lines()))
        status |= 0 if all(v.ok for v in verdicts) else 1
    if ns.mode in ("backlog", "all"):
        from .backlog import backlog

        ok = asyncio.run(
            backlog(brokers, ns.backlog_messages, ns.backlog_rabbit_messages, ns.backlog_seconds)
        )
        status |= 0 if ok else 1
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
