"""health() tells what runs: a dead source fails the app, a dead or paused binding shows."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from streamlib import StreamApp, StreamlibError

pytestmark = pytest.mark.anyio


class Fatal(BaseException):
    """Not an Exception: escapes the handlers' error handling."""


def _app(name: str, bindings: dict[str, object]) -> StreamApp:
    namespace = uuid.uuid4().hex
    return StreamApp(
        name,
        config={
            "binders": {"mem": {"type": "memory", "namespace": namespace}},
            "bindings": bindings,
        },
    )


async def test_a_source_that_dies_fails_the_app_loudly(caplog: pytest.LogCaptureFixture) -> None:
    app = _app("dying", {"boom-out-0": {"destination": "dying-d"}})
    raised = asyncio.Event()

    @app.source(interval=0.01)
    async def boom() -> int:
        raised.set()
        raise Fatal("the source gave up")

    with pytest.raises(StreamlibError, match="source boom died: Fatal: the source gave up"):
        async with app.run():
            await asyncio.wait_for(raised.wait(), 5)
            health = app.health()
            assert health["status"] == "down"
            assert health["sources"] == {"boom": "down"}
            assert health["failures"] == {"source boom": "Fatal: the source gave up"}
            await asyncio.wait_for(app.wait_failed(), 5)
    [record] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "source boom died: Fatal: the source gave up" in record.getMessage()
    assert record.exc_info is not None


async def test_health_reports_a_binding_that_stopped_running_on_its_own() -> None:
    app = _app("dead-binding", {"take-in-0": {"destination": "dead-d", "group": "g"}})
    raised = asyncio.Event()

    @app.sink
    async def take(data: bytes) -> None:
        raised.set()
        raise Fatal("the worker gave up")

    async with app.run():
        assert app.health()["bindings"] == {"take-in-0": "running"}
        await app.send("dead-d", b"m1")
        await asyncio.wait_for(raised.wait(), 5)
        await asyncio.sleep(0)
        health = app.health()
        assert not app.binding("take-in-0").is_running
        assert health["bindings"] == {"take-in-0": "down"}
        assert health["status"] == "down"


async def test_health_reports_paused_and_stopped_bindings() -> None:
    app = _app("paused", {"take-in-0": {"destination": "paused-d", "group": "g"}})

    @app.sink
    async def take(data: bytes) -> None: ...

    async with app.run():
        binding = app.binding("take-in-0")
        await binding.pause()
        assert app.health()["bindings"] == {"take-in-0": "paused"}
        assert app.health()["status"] == "up"
        await binding.resume()
        assert app.health()["bindings"] == {"take-in-0": "running"}
        await binding.stop()
        assert app.health()["bindings"] == {"take-in-0": "stopped"}
        assert app.health()["status"] == "up"
        await binding.start()
        assert app.health()["bindings"] == {"take-in-0": "running"}
