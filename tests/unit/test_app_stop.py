"""Stopping an app: bounded by shutdown-timeout as a whole, and always releasing what it holds."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from tracking_binder import TYPE, TrackingBinder

from streamlib import StreamApp
from streamlib.memory import memory_broker

pytestmark = pytest.mark.anyio


def _stuck_app(namespace: str, shutdown_timeout: float) -> tuple[StreamApp, asyncio.Event]:
    """An app whose sink never finishes the message it takes; the event says it took one."""
    app = StreamApp(
        "stuck",
        config={
            "shutdown-timeout": shutdown_timeout,
            "binders": {"t": {"type": TYPE, "namespace": namespace}},
            "bindings": {
                "take-in-0": {"destination": "stuck-d", "group": "g"},
                "emit-out-0": {"destination": "stuck-out"},
            },
        },
    )
    taken = asyncio.Event()

    @app.sink
    async def take(data: bytes) -> None:
        taken.set()
        await asyncio.Event().wait()

    @app.source(interval=3600)
    async def emit() -> None:
        return None

    return app, taken


def _binder(app_binders_before: int) -> TrackingBinder:
    [binder] = TrackingBinder.instances[app_binders_before:]
    return binder


async def test_stop_with_a_stuck_handler_ends_within_shutdown_timeout_and_closes_all() -> None:
    namespace = uuid.uuid4().hex
    before = len(TrackingBinder.instances)
    app, taken = _stuck_app(namespace, shutdown_timeout=1.0)
    await app.start()
    await app.send("stuck-d", b"m1")
    await asyncio.wait_for(taken.wait(), 5)

    started = time.monotonic()
    await app.stop()
    elapsed = time.monotonic() - started

    binder = _binder(before)
    assert elapsed < 1.5, f"stop took {elapsed:.2f}s with shutdown-timeout 1s"
    assert binder.closed
    assert binder.producers and binder.open_producers() == []
    # The interrupted message went back to its queue: it is redelivered, not lost.
    assert [e.body for e in memory_broker(namespace).queues["stuck-d.g"].items] == [b"m1"]
    assert app.health()["status"] == "down"


async def test_a_cancelled_stop_still_closes_binders_and_producers() -> None:
    namespace = uuid.uuid4().hex
    before = len(TrackingBinder.instances)
    app, taken = _stuck_app(namespace, shutdown_timeout=30.0)
    await app.start()
    await app.send("stuck-d", b"m1")
    await asyncio.wait_for(taken.wait(), 5)
    binding = app.binding("take-in-0")

    stopping = asyncio.create_task(app.stop())
    while binding.is_running:  # draining has begun
        await asyncio.sleep(0.01)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping

    binder = _binder(before)
    assert binder.closed
    assert binder.producers and binder.open_producers() == []
    assert [e.body for e in memory_broker(namespace).queues["stuck-d.g"].items] == [b"m1"]
    assert app.health()["status"] == "down"
