"""What the DLQ command tests share: a config file, an app that fails poison messages, and
the ``streamlib dlq`` command run as a subprocess."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import logging
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml

from streamlib import Message, StreamApp
from streamlib.cli import main
from streamlib.dlq.cli import Targets
from streamlib.testing import BinderHarness

INPUT = "orders-in-0"
OUTPUT = "orders-out-0"
COMMAND_TIMEOUT = 60.0


def write_config(harness: BinderHarness, path: Path, destination: str, group: str) -> Path:
    """A config file with a consumer binding (DLQ on, one attempt) and a producer binding."""
    config = {
        "name": "dlq-test",
        **harness.binder_config(),
        "bindings": {
            INPUT: {
                "destination": destination,
                "group": group,
                "consumer": {"max-attempts": 1, "dlq": True},
            },
            OUTPUT: {"destination": destination},
        },
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


class PoisonApp:
    """An app whose sink fails the messages in ``poison`` (ValueError for even ``seq``,
    LookupError for odd) and records every message it handled."""

    def __init__(self, config: Path) -> None:
        self.app = StreamApp("dlq-test", config=config)
        self.poison: set[int] = set()
        self.handled: list[tuple[int, Any]] = []

        @self.app.sink
        async def orders(msg: Message[dict[str, Any]]) -> None:
            seq = int(msg.payload["seq"])
            if seq in self.poison:
                if seq % 2 == 0:
                    raise ValueError(f"bad even {seq}")
                raise LookupError(f"bad odd {seq}")
            self.handled.append((seq, msg.headers.get("x-replay-count")))

    async def wait_handled(self, seqs: set[int], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not seqs <= {seq for seq, _ in self.handled}:
                await asyncio.sleep(0.05)


async def dlq_size(config: Path, binding: str = INPUT) -> int:
    """Messages in ``binding``'s DLQ, read the way the command reads them."""
    targets = Targets(argparse.Namespace(app=None, config=str(config), set=[]))
    try:
        target = targets.resolve(binding)
        assert target is not None
        return sum([1 async for _ in target.queues.browse(target.dlq)])
    finally:
        await targets.aclose()


async def wait_dlq_size(config: Path, expected: int, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while await dlq_size(config) != expected:
            await asyncio.sleep(0.2)


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamlib", "dlq", *args]


async def run(
    *args: str, cwd: Path, stdin: str = "", code: int = 0
) -> subprocess.CompletedProcess[str]:
    """``streamlib dlq ARGS`` in a subprocess, ``stdin`` its input; fails unless it exits
    with ``code``."""

    def call() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command(*args),
            cwd=cwd,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )

    done = await asyncio.to_thread(call)
    assert done.returncode == code, f"streamlib dlq {' '.join(args)}: {done.stderr}{done.stdout}"
    return done


def json_lines(out: str) -> list[Mapping[str, Any]]:
    return [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]


def _inline(args: tuple[str, ...]) -> str:
    root = logging.getLogger()
    level = root.level
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = main(["dlq", *args])
    finally:
        root.setLevel(level)  # the command quiets logging
    assert code == 0, f"streamlib dlq {' '.join(args)}: exit {code}: {out.getvalue()}"
    return out.getvalue()


async def run_inline(*args: str) -> str:
    """``streamlib dlq ARGS`` in this process (a worker thread): its standard output. Cheaper
    than a subprocess for checking the command's options."""
    return await asyncio.to_thread(_inline, args)
