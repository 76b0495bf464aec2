"""``streamlib send DESTINATION JSON``: one message through an app's or a file's configuration."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamlib import Message, StreamApp


def _streamlib(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIB_")}
    env["PYTHONPATH"] = str(cwd)
    return subprocess.run(
        [sys.executable, "-m", "streamlib", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _receive(config: dict[str, Any], binding: str) -> Message[dict[str, Any]]:
    """The first message a fresh group reads from ``binding``'s destination (from the start)."""
    received: asyncio.Queue[Message[dict[str, Any]]] = asyncio.Queue()
    app = StreamApp("receiver", config=config)

    async def take(msg: Message[dict[str, Any]]) -> None:
        await received.put(msg)

    take.__name__ = binding.removesuffix("-in-0")
    app.sink(take)
    async with app.run():
        return await asyncio.wait_for(received.get(), 20)


def test_without_a_broker_it_says_the_memory_binder_reaches_no_one(tmp_path: Path) -> None:
    result = _streamlib("send", "orders", '{"id": 1}', cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert (
        "orders is bound to the in-memory binder (binder 'memory'), which reaches no other" in line
    )


def test_a_message_that_is_not_json_is_one_line(tmp_path: Path) -> None:
    result = _streamlib("send", "orders", "{id: 1}", cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "the message is not JSON" in line and "'{id: 1}'" in line


@pytest.mark.kafka
@pytest.mark.anyio
async def test_send_with_a_config_file_reaches_kafka_with_key_and_headers(
    tmp_path: Path, kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    topic = unique("send-orders")
    config = {
        "binders": {"kafka": {"type": "kafka", "bootstrap-servers": kafka_bootstrap}},
        "bindings": {"bill-in-0": {"destination": topic, "group": unique("send-billing")}},
    }
    (tmp_path / "streamlib.yaml").write_text(yaml.safe_dump(config))
    result = _streamlib(
        "send", "--key", "c-1", "--header", "trace=abc", topic, '{"id": 1}', cwd=tmp_path
    )
    assert (result.returncode, result.stdout) == (0, f"sent to {topic}\n"), result.stderr
    msg = await _receive(config, "bill-in-0")
    assert msg.payload == {"id": 1}
    assert msg.key == b"c-1"
    assert msg.headers["trace"] == "abc"
    assert msg.headers["contentType"] == "application/json"


APP = """
from pathlib import Path

from streamlib import StreamApp

app = StreamApp("orders", config={config!r})


@app.source(interval=0.01)
async def tick() -> int:
    Path("source-ran").touch()
    return 1


@app.sink
async def bill(order: dict) -> None:
    Path("sink-ran").touch()
"""


@pytest.mark.kafka
@pytest.mark.anyio
async def test_send_to_a_binding_of_an_app_uses_its_destination_and_starts_no_handler(
    tmp_path: Path, kafka_bootstrap: str, unique: Callable[[str], str]
) -> None:
    topic = unique("send-app-orders")
    config = {
        "binders": {"kafka": {"type": "kafka", "bootstrap-servers": kafka_bootstrap}},
        "bindings": {
            "bill-in-0": {"destination": topic, "group": unique("send-app")},
            "tick-out-0": {"destination": unique("send-ticks")},
        },
    }
    (tmp_path / "orders_app.py").write_text(APP.format(config=config))
    result = _streamlib("send", "--app", "orders_app:app", "bill-in-0", '{"id": 7}', cwd=tmp_path)
    assert (result.returncode, result.stdout) == (0, f"sent to {topic}\n"), result.stderr
    msg = await _receive(config, "bill-in-0")
    assert msg.payload == {"id": 7}
    assert not (tmp_path / "source-ran").exists()
    assert not (tmp_path / "sink-ran").exists()
