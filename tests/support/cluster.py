"""tools/cluster.py from the tests: start a cluster, kill and start its nodes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "cluster.py"
started: list[str] = []
"""The clusters this session started (and so stops at its end)."""
figures: list[str] = []
"""What each failover test measured, printed at the end of the run."""


def cluster(*args: str) -> str:
    """Run tools/cluster.py with ``args``; its output, or a failure naming what it printed."""
    proc = subprocess.run(
        [sys.executable, str(TOOL), *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"tools/cluster.py {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def up(kind: str) -> None:
    """Start the ``kind`` cluster (``kafka``, ``rabbit`` or ``all``) unless it runs."""
    status = subprocess.run(
        [sys.executable, str(TOOL), "status"], capture_output=True, text=True, check=False
    ).stdout
    prefix = "" if kind == "all" else f"{kind}-"
    if any(line.startswith(prefix) and ": down" in line for line in status.splitlines()):
        started.append(kind)
    cluster("up", kind)


def addresses() -> dict[str, str]:
    """The variables ``tools/cluster.py env`` prints."""
    return dict(line.split(" ", 1)[1].split("=", 1) for line in cluster("env").splitlines())
