"""The group of processor processes the driver starts, kills and stops."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class Fleet:
    """Processor processes running ``bench.chaos.processor`` with one spec file."""

    def __init__(self, spec: Path, logs: Path) -> None:
        self.spec = spec
        self.logs = logs
        self.alive: list[asyncio.subprocess.Process] = []
        self.started = 0
        self.killed = 0
        self.stopped = 0

    async def start_one(self) -> asyncio.subprocess.Process:
        self.started += 1
        path = self.logs / f"processor-{self.started:03d}.log"
        with path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.chaos.processor",
                str(self.spec),
                cwd=REPO,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        self.alive.append(proc)
        return proc

    def reap(self) -> list[int]:
        """Forget processes that exited by themselves; their exit codes."""
        gone = [p for p in self.alive if p.returncode is not None]
        self.alive = [p for p in self.alive if p.returncode is None]
        return [p.returncode for p in gone if p.returncode is not None]

    async def kill(self, proc: asyncio.subprocess.Process) -> None:
        self.alive.remove(proc)
        self.killed += 1
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        await proc.wait()

    async def stop(self, proc: asyncio.subprocess.Process, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; True when it stopped by itself."""
        if proc in self.alive:
            self.alive.remove(proc)
        self.stopped += 1
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
            return True
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
            return False

    async def stop_all(self, timeout: float = 30.0) -> int:
        """Stop every process at once; how many had to be killed."""
        results = await asyncio.gather(*(self.stop(p, timeout) for p in list(self.alive)))
        return sum(1 for clean in results if not clean)
