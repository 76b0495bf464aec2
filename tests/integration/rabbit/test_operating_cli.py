"""``streamlib run --log-format json`` on RabbitMQ: the banner and every log line are JSON,
records logged by a handler name its binding and destination; ``streamlib bindings``
lists, pauses, resumes, stops and starts the running app's binding."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit]

APP = """
import logging
from streamlib import StreamApp

app = StreamApp("ops-cli")
log = logging.getLogger("ops.app")

@app.sink
async def work(payload: str) -> None:
    log.info("handled %s", payload)
"""


class _Lines:
    """The app's stderr, read on a thread, as parsed JSON objects (a line that is no JSON
    fails the test)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.records: list[dict[str, Any]] = []
        self.not_json: list[str] = []
        self._proc = proc
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            try:
                self.records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                self.not_json.append(line)

    def close(self) -> None:
        self._thread.join(timeout=10)
        assert self._proc.stderr is not None
        self._proc.stderr.close()

    async def wait(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async with asyncio.timeout(30):
            while True:
                found = [r for r in self.records if match(r)]
                if found:
                    return found[0]
                if self._proc.poll() is not None:
                    raise AssertionError(f"the app exited: {self.records} {self.not_json}")
                await asyncio.sleep(0.02)


def _cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "streamlib", "bindings", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _run_app(directory: Path, config: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(directory)}
    command = ["run", "ops_cli_app:app", "--config", str(config), "--log-format", "json"]
    return subprocess.Popen(
        [sys.executable, "-m", "streamlib", *command], env=env, stderr=subprocess.PIPE, text=True
    )


async def test_json_logs_banner_and_bindings_commands(
    rabbit_url: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    destination = unique("ops-cli")
    (tmp_path / "ops_cli_app.py").write_text(APP)
    config = tmp_path / "streamlib.yaml"
    config.write_text(
        orjson.dumps(
            {
                "binders": {"rabbit": {"type": "rabbit", "url": rabbit_url}},
                "management": {"port": 0},
                "bindings": {"work-in-0": {"destination": destination, "group": "g"}},
            }
        ).decode()
    )
    proc = _run_app(tmp_path, config)
    lines = _Lines(proc)
    try:
        endpoint = await lines.wait(lambda r: "management endpoint on" in r["message"])
        url = endpoint["message"].split()[3]
        await lines.wait(lambda r: r["message"].startswith("ops-cli started"))
        listed = await asyncio.to_thread(_cli, "list", "--url", url)
        paused = await asyncio.to_thread(_cli, "pause", "work-in-0", "--url", url)
        as_json = orjson.loads(await asyncio.to_thread(_cli, "list", "--json", "--url", url))
        resumed = await asyncio.to_thread(_cli, "resume", "work-in-0", "--url", url)
        stopped = await asyncio.to_thread(_cli, "stop", "work-in-0", "--url", url)
        started = await asyncio.to_thread(_cli, "start", "work-in-0", "--url", url)
        connection = await aio_pika.connect(rabbit_url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(destination)
            await exchange.publish(aio_pika.Message(b"hello", content_type="text/plain"), "")
        handled = await lines.wait(lambda r: r["message"] == "handled hello")
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
    finally:
        proc.kill()
        proc.wait()
        lines.close()
    assert proc.returncode == 0
    assert lines.not_json == []
    assert [line.split() for line in listed.splitlines()] == [
        ["NAME", "STATE", "DESTINATION", "GROUP", "BINDER"],
        ["work-in-0", "running", destination, "g", "rabbit"],
    ]
    assert paused == "work-in-0: paused\n"
    assert [(b["name"], b["state"]) for b in as_json] == [("work-in-0", "paused")]
    assert (resumed, stopped, started) == (
        "work-in-0: running\n",
        "work-in-0: stopped\n",
        "work-in-0: running\n",
    )
    assert handled["binding"] == "work-in-0"
    assert handled["destination"] == destination
    assert handled["logger"] == "ops.app"
    messages = [r["message"] for r in lines.records]
    assert f"ops-cli: config file {config.resolve()}" in messages
    binder = next(r for r in lines.records if r.get("binder") == "rabbit")
    assert binder["message"] == "binder rabbit (type rabbit): url=" + rabbit_url.replace(
        ":guest@", ":***@"
    )
    banner = next(r for r in lines.records if r["message"].startswith("binding work-in-0:"))
    assert banner["message"] == (
        f"binding work-in-0: consumes {destination}, group g, not partitioned, "
        "concurrency 1, binder rabbit"
    )
    assert (banner["binding"], banner["destination"]) == ("work-in-0", destination)
