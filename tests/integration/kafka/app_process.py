"""The streamlib apps that the Kafka fault tests run as processes, so they can be killed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]


def start_app(script: Path, *args: str) -> subprocess.Popen[bytes]:
    """Run ``script`` with this Python; its stdout is a pipe (it prints ``ready``)."""
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def ready(proc: subprocess.Popen[bytes], what: str) -> None:
    """Wait for the ``ready`` line the app prints once it consumes."""
    assert proc.stdout is not None
    line = await asyncio.to_thread(proc.stdout.readline)
    assert line.strip() == b"ready", f"{what} did not start: {line!r}"


def stop_all(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """Kill whatever still runs and close the pipes."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def create_topics(bootstrap: str, partitions: Mapping[str, int]) -> None:
    """Create each topic with its partition count (replication factor 1)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, n, 1) for name, n in partitions.items()])
    finally:
        await admin.close()
