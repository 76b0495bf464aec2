"""The chaos run for one broker: produce, process under random faults, drain, count.

Phases, each with its own deadline: start the processors and produce every input (faults off),
then the chaos phase (a random fault every few seconds) until every input is accounted for or
its deadline passes, then a quiet drain phase, then a clean stop and the count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.faults.proxy import FaultProxy

from .checker import Arrival, Fault, Observed, Verdict, judge
from .fleet import Fleet
from .sides import Side
from .workload import Workload

FAULT_WEIGHTS = {"kill": 3, "scale": 2, "cut": 3, "restart": 1}


@dataclass(slots=True)
class Options:
    messages: int = 200_000
    keys: int = 64
    reject_every: int = 1000
    seed: int = 13
    processors: int = 2
    max_processors: int = 3
    faults: tuple[str, ...] = tuple(FAULT_WEIGHTS)
    fault_gap: tuple[float, float] = (2.0, 5.0)
    restart_gap: float = 30.0
    produce_seconds: float = 300.0
    chaos_seconds: float = 600.0
    drain_seconds: float = 120.0
    handler_ms: float = 0.0
    direct: bool = False
    logs: Path = field(default_factory=lambda: Path("/tmp/streamlib-chaos-logs"))


def say(text: str) -> None:
    print(text, flush=True)


class Run:
    """One broker's chaos run."""

    def __init__(self, side: Side, workload: Workload, opts: Options, proxy_port: int) -> None:
        self.side = side
        self.workload = workload
        self.opts = opts
        self.rnd = random.Random(f"{opts.seed}-{side.name}")
        self.proxy = FaultProxy(*side.upstream, port=proxy_port)
        self.logs = opts.logs / workload.run_id / side.name
        self.arrivals: list[Arrival] = []
        self.faults: list[Fault] = []
        self.t0 = time.monotonic()
        self._seen: set[int] = set()
        self._counted = 0
        self._expected = workload.messages - len(workload.rejected_seqs())
        self._last_restart = -1e9
        self.fleet: Fleet | None = None
        self.exits: list[int] = []

    def clock(self) -> str:
        return f"[{self.side.name} {time.monotonic() - self.t0:6.1f}s]"

    def outputs_seen(self) -> int:
        for arrival in self.arrivals[self._counted :]:
            self._seen.add(arrival.seq)
        self._counted = len(self.arrivals)
        return len(self._seen)

    async def done(self) -> bool:
        if self.outputs_seen() < self._expected:
            return False
        try:
            settled, _ = await asyncio.wait_for(self.side.settled(), 60)
        except Exception:
            return False
        return settled

    async def execute(self) -> Verdict:
        self.logs.mkdir(parents=True, exist_ok=True)
        address = self.side.direct_address if self.opts.direct else self.proxy.address
        spec = self.side.processor_spec(address)
        spec["workload"] = asdict(self.workload)
        spec["handler_ms"] = self.opts.handler_ms
        spec_path = self.logs / "processor.json"
        spec_path.write_text(json.dumps(spec, indent=2))
        say(f"{self.clock()} topology for run {self.workload.run_id}; logs in {self.logs}")
        await self.side.setup()
        await self.proxy.start()
        self.fleet = fleet = Fleet(spec_path, self.logs)
        reader = asyncio.create_task(self.side.read_outputs(self.arrivals))
        try:
            return await self._phases(fleet, reader)
        finally:
            for proc in list(fleet.alive):
                await fleet.kill(proc)
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            await self.proxy.stop()

    async def _phases(self, fleet: Fleet, reader: asyncio.Task[None]) -> Verdict:
        opts = self.opts
        for _ in range(opts.processors):
            await fleet.start_one()
        deadline = time.monotonic() + 90
        while not await self.side.ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.side.name}: processors not ready after 90 s")
            await asyncio.sleep(0.5)
        say(f"{self.clock()} {len(fleet.alive)} processors up; producing {self.workload.messages}")
        last = [0.0]

        def progress(n: int) -> None:
            if time.monotonic() - last[0] > 10 or n == self.workload.messages:
                last[0] = time.monotonic()
                say(f"{self.clock()} produced {n}, outputs {self.outputs_seen()}")

        await asyncio.wait_for(self.side.produce(progress), opts.produce_seconds)
        say(f"{self.clock()} chaos phase (faults: {', '.join(opts.faults) or 'none'})")
        await self._chaos(fleet, reader, time.monotonic() + opts.chaos_seconds)
        say(f"{self.clock()} drain phase: no faults, up to {opts.drain_seconds:.0f} s")
        while len(fleet.alive) < opts.processors:
            await fleet.start_one()
        await self._wait_done(fleet, reader, time.monotonic() + opts.drain_seconds)
        killed = await fleet.stop_all()
        if killed:
            say(f"{self.clock()} {killed} processors did not stop within 30 s and were killed")
        await self._quiet_reader()
        left = await self.side.leftovers()
        seen = Observed(self.arrivals, left.dead_letters, left.remaining, left.stuck, self.faults)
        return judge(self.side.name, self.workload, seen)

    async def _quiet_reader(self) -> None:
        """Let the reader take what is still on its way: until 3 s pass without an output."""
        deadline = time.monotonic() + 30
        count = -1
        while count != len(self.arrivals) and time.monotonic() < deadline:
            count = len(self.arrivals)
            await asyncio.sleep(3)

    def _status(self, fleet: Fleet) -> str:
        return (
            f"{self.clock()} outputs {self.outputs_seen()}/{self._expected}, "
            f"processors {len(fleet.alive)}, faults {len(self.faults)}"
        )

    async def _wait_done(self, fleet: Fleet, reader: asyncio.Task[None], until: float) -> bool:
        last = time.monotonic()
        while time.monotonic() < until:
            self._check(fleet, reader)
            while len(fleet.alive) < self.opts.processors:
                await fleet.start_one()
            if await self.done():
                say(f"{self._status(fleet)}; everything accounted for")
                return True
            if time.monotonic() - last > 10:
                last = time.monotonic()
                _, detail = await self.side.settled()
                say(f"{self._status(fleet)}; {detail}")
            await asyncio.sleep(1)
        say(f"{self._status(fleet)}; deadline passed")
        return False

    def _check(self, fleet: Fleet, reader: asyncio.Task[None]) -> None:
        if reader.done():
            raise RuntimeError(f"{self.side.name}: the output reader stopped: {reader!r}")
        for code in fleet.reap():
            say(f"{self.clock()} a processor exited by itself with status {code}")
            self.exits.append(code)

    async def _chaos(self, fleet: Fleet, reader: asyncio.Task[None], until: float) -> None:
        kinds = [k for k in FAULT_WEIGHTS if k in self.opts.faults]
        last_status = time.monotonic()
        while time.monotonic() < until:
            self._check(fleet, reader)
            if not fleet.alive:
                await fleet.start_one()
            if await self.done():
                say(f"{self._status(fleet)}; everything accounted for")
                return
            if time.monotonic() - last_status > 10:
                last_status = time.monotonic()
                say(self._status(fleet))
            gap = self.rnd.uniform(*self.opts.fault_gap)
            await asyncio.sleep(gap)
            if not kinds:
                continue
            kind = self.rnd.choices(kinds, [FAULT_WEIGHTS[k] for k in kinds])[0]
            if kind == "restart" and time.monotonic() - self._last_restart < self.opts.restart_gap:
                kind = "cut" if "cut" in kinds else "kill" if "kill" in kinds else ""
            if kind:
                await self._fault(kind, fleet)

    async def _fault(self, kind: str, fleet: Fleet) -> None:
        start = time.monotonic()
        detail = ""
        if kind == "kill" and fleet.alive:
            victim = self.rnd.choice(fleet.alive)
            await fleet.kill(victim)
            await fleet.start_one()
            detail = f"SIGKILL pid {victim.pid}, started a new one"
        elif kind == "scale":
            grow = len(fleet.alive) < self.opts.max_processors and (
                len(fleet.alive) <= 1 or self.rnd.random() < 0.5
            )
            if grow:
                proc = await fleet.start_one()
                detail = f"added pid {proc.pid}"
            else:
                victim = self.rnd.choice(fleet.alive)
                clean = await fleet.stop(victim)
                detail = f"removed pid {victim.pid}" + ("" if clean else " (had to SIGKILL)")
        elif kind == "cut":
            outage = self.rnd.uniform(0.0, 3.0)
            cut = self.proxy.cut(outage)
            await asyncio.sleep(outage)
            detail = f"cut {cut} connections, refused new ones for {outage:.1f} s"
        elif kind == "restart":
            self._last_restart = start
            detail = await self._restart_broker()
        else:
            return
        end = time.monotonic()
        self.faults.append(Fault(kind, start, end, detail))
        say(f"{self.clock()} {kind}: {detail} ({end - start:.1f} s)")

    async def _restart_broker(self) -> str:
        tool = os.environ["STREAMLIB_BROKERS_TOOL"]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            tool,
            "restart",
            self.side.name,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"restart {self.side.name} failed: {out.decode(errors='replace')}")
        return f"brokers.py restart {self.side.name}"
