"""The management endpoint's answers to requests it cannot serve, and the bindings command
finding the endpoint from the configuration (memory binder; the brokers are tested in
tests/integration/test_management.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from streamlib import StreamApp
from streamlib.cli import main
from streamlib.testing.brokers import unique_name

pytestmark = pytest.mark.anyio


def _app() -> StreamApp:
    app = StreamApp(
        "endpoint",
        config={
            "management": {"port": 0},
            "bindings": {"take-in-0": {"destination": unique_name("ep"), "group": "g"}},
        },
    )

    @app.sink
    async def take(payload: str) -> None:
        return None

    return app


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        (
            "/bindings/nope",
            {"state": "PAUSED"},
            404,
            "no consumer binding 'nope'; bindings: take-in-0",
        ),
        (
            "/bindings/take-in-0",
            {"state": "SLEEPING"},
            400,
            "state must be one of STOPPED, STARTED, PAUSED, RESUMED",
        ),
        (
            "/bindings/take-in-0",
            ["PAUSED"],
            400,
            "state must be one of STOPPED, STARTED, PAUSED, RESUMED",
        ),
    ],
)
async def test_a_bad_state_change_is_refused_and_changes_nothing(
    path: str, body: object, status: int, error: str
) -> None:
    app = _app()
    async with app.run(), aiohttp.ClientSession() as session:
        async with session.post(f"{app.management_url}{path}", json=body) as response:
            answer = (response.status, await response.json())
        async with session.get(f"{app.management_url}/bindings/nope") as response:
            missing = response.status
        state = app.health()["bindings"]["take-in-0"]
    assert answer == (status, {"error": error})
    assert missing == 404
    assert state == "running"


def _run_cli(*args: str) -> int:
    return main(list(args))


async def test_the_bindings_command_reads_the_endpoint_from_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = _app()
    async with app.run():
        assert app.management_url is not None
        port = app.management_url.rsplit(":", 1)[1]
        config = tmp_path / "streamlib.yaml"
        await asyncio.to_thread(config.write_text, f"management: {{port: {port}}}\n")
        paused = await asyncio.to_thread(
            _run_cli, "bindings", "pause", "take-in-0", "--config", str(config)
        )
        state = app.health()["bindings"]["take-in-0"]
    assert (paused, state) == (0, "paused")
    assert capsys.readouterr().out == "take-in-0: paused\n"


async def test_the_bindings_command_without_an_endpoint_says_how_to_name_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "streamlib.yaml"
    await asyncio.to_thread(config.write_text, "name: plain\n")
    code = await asyncio.to_thread(_run_cli, "bindings", "list", "--config", str(config))
    assert code == 2
    assert "pass --url http://HOST:PORT, or set management.port" in caplog.text


async def test_ready_is_503_and_health_still_answers_while_the_app_drains() -> None:
    destination = unique_name("drain")
    app = StreamApp(
        "draining",
        config={
            "management": {"port": 0},
            "bindings": {"take-in-0": {"destination": destination, "group": "g"}},
        },
    )
    started, release = asyncio.Event(), asyncio.Event()

    @app.sink
    async def take(payload: str) -> None:
        started.set()
        await release.wait()

    await app.start()
    url = app.management_url
    async with aiohttp.ClientSession() as session:
        await app.send(destination, "slow")
        await started.wait()
        async with session.get(f"{url}/ready") as response:
            before = response.status
        stopping = asyncio.create_task(app.stop())
        await asyncio.sleep(0)  # stop has begun draining
        async with session.get(f"{url}/ready") as response:
            draining = (response.status, await response.json())
        async with session.get(f"{url}/health") as response:
            health = response.status
        release.set()
        await stopping
    assert before == 200
    assert draining == (503, {"status": "not ready", "waiting-for": ["stop"]})
    assert health == 200
