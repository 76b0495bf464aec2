"""The Bus on real brokers: ``streamlib run`` node processes and the CLI, and the wire form.

Two ``billing`` nodes and one ``audit`` node run as separate processes; ``streamlib bus
refresh --destination billing`` must reload exactly the billing nodes, and ``streamlib bus env``
must set a key on every node.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
import yaml

from streamlib import Message, StreamApp
from streamlib.bus import Bus
from streamlib.config import deep_merge
from streamlib.converters import mime_of
from streamlib.testing import BinderHarness

HERE = Path(__file__).parent
STREAMLIB = str(Path(sys.executable).with_name("streamlib"))
START_TIMEOUT = 60.0

pytestmark = pytest.mark.anyio


@dataclass
class Node:
    name: str
    config_path: Path
    config: dict[str, Any]
    status: Path
    log: Path
    process: asyncio.subprocess.Process

    def set_greeting(self, **greeting: str) -> None:
        self.config["greeting"] = greeting
        self.config_path.write_text(yaml.safe_dump(self.config))

    def records(self) -> list[dict[str, Any]]:
        if not self.status.exists():
            return []
        return [orjson.loads(line) for line in self.status.read_bytes().splitlines()]

    async def wait_started(self) -> None:
        with anyio.move_on_after(START_TIMEOUT):
            while self.process.returncode is None:
                if "started; bindings" in self.log.read_text():
                    return
                await anyio.sleep(0.1)
        pytest.fail(f"{self.name} did not start:\n{self.log.read_text()}")


class Estate:
    def __init__(self, tmp_path: Path, binder: Mapping[str, Any], destination: str) -> None:
        self.tmp_path = tmp_path
        self.binder = binder
        self.destination = destination
        self.nodes: list[Node] = []

    async def start(
        self, name: str, index: int, count: int, bus: Mapping[str, Any] | None = None
    ) -> Node:
        label = f"{name}-{index}"
        config = deep_merge(
            self.binder,
            {
                "name": name,
                "instance-index": index,
                "instance-count": count,
                "bus": {"destination": self.destination, **(bus or {})},
                "greeting": {"message": "hello"},
                "probe": {"status-file": str(self.tmp_path / f"{label}.jsonl")},
            },
        )
        path = self.tmp_path / f"{label}.yaml"
        path.write_text(yaml.safe_dump(config))
        log = self.tmp_path / f"{label}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                STREAMLIB,
                "run",
                "bus_node:app",
                "--config",
                str(path),
                cwd=HERE,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        node = Node(label, path, config, self.tmp_path / f"{label}.jsonl", log, process)
        self.nodes.append(node)
        return node

    async def cli(self, *args: str) -> tuple[int, str]:
        """Run ``streamlib bus ARGS`` with the first node's config; (exit code, output)."""
        config = self.nodes[0].config_path
        process = await asyncio.create_subprocess_exec(
            STREAMLIB,
            "bus",
            *args,
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        assert process.returncode is not None
        return process.returncode, output.decode()

    async def stop(self) -> None:
        for node in self.nodes:
            if node.process.returncode is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                await asyncio.wait_for(node.process.wait(), 30)
            except TimeoutError:
                node.process.kill()
                await node.process.wait()


@pytest.fixture
async def estate(broker_harness: BinderHarness, tmp_path: Path) -> AsyncIterator[Estate]:
    destination = broker_harness.unique("springCloudBus")
    estate = Estate(tmp_path, broker_harness.binder_config(), destination)
    try:
        yield estate
    finally:
        await estate.stop()


def acked(output: str) -> list[str]:
    return [line.split(" ", 1)[1] for line in output.splitlines() if line.startswith("ack ")]


async def test_cli_refresh_reloads_exactly_the_billing_processes_and_env_reaches_all(
    estate: Estate,
) -> None:
    billing = [await estate.start("billing", i, 2) for i in range(2)]
    audit = await estate.start("audit", 0, 1)
    for node in (*billing, audit):
        await node.wait_started()
        node.set_greeting(message="bonjour")

    code, output = await estate.cli(
        "refresh", "--destination", "billing", "--expect", "2", "--wait", "5"
    )

    assert code == 0, output
    billing_ids = acked(output)
    assert len(billing_ids) == 2 and all(i.startswith("billing:") for i in billing_ids)
    for node in billing:
        assert [r["changed"] for r in node.records()] == [["greeting.message"]]
        assert node.records()[-1]["message"] == "bonjour"
    assert sorted(r["id"] for n in billing for r in n.records()) == sorted(billing_ids)

    code, output = await estate.cli("env", "greeting.punctuation=?", "--expect", "3", "--wait", "5")

    assert code == 0, output
    assert len(set(acked(output))) == 3
    for node in billing:
        assert [r["changed"] for r in node.records()] == [
            ["greeting.message"],
            ["greeting.punctuation"],
        ]
        assert node.records()[-1]["punctuation"] == "?"
    # The audit node handles bus events in order: it acked the env change, so it had already
    # seen the billing refresh, and did not act on it (its one refresh came with the env).
    assert [r["changed"] for r in audit.records()] == [["greeting.message", "greeting.punctuation"]]
    assert "RefreshRemoteApplicationEvent" not in audit.log.read_text()


async def test_cli_exits_non_zero_when_an_expected_ack_does_not_come(estate: Estate) -> None:
    node = await estate.start("billing", 0, 1)
    await node.wait_started()

    code, output = await estate.cli(
        "refresh", "--destination", "billing", "--expect", "2", "--wait", "2"
    )

    assert code == 1, output
    assert len(acked(output)) == 1
    assert "1 of 2 expected nodes acked" in output


async def test_signed_events_cross_the_broker_and_forged_ones_are_rejected(
    estate: Estate,
) -> None:
    node = await estate.start("billing", 0, 1, bus={"signing-key": "k-billing-7f3"})
    forger = await estate.start("forger", 0, 1, bus={"signing-key": "k-forged-2c9"})
    for started in (node, forger):
        await started.wait_started()
    node.set_greeting(message="signed")

    estate.nodes = [forger, node]  # the CLI reads the first node's file: the wrong key
    code, output = await estate.cli(
        "env", "greeting.punctuation=forged", "--destination", "billing", "--wait", "1"
    )
    assert (code, acked(output)) == (0, [])

    estate.nodes = [node, forger]
    code, output = await estate.cli("refresh", "--destination", "billing", "--expect", "1")
    assert code == 0, output
    # Events are handled in order: the signed refresh was acked, so the forged change had
    # been seen before it, and was rejected.
    assert [r["changed"] for r in node.records()] == [["greeting.message"]]
    assert node.records()[-1]["punctuation"] == "!"
    log = node.log.read_text()
    assert "without a valid signature" in log
    assert "k-billing-7f3" not in log and "k-forged-2c9" not in log


async def test_bus_events_cross_the_broker_as_spring_json(broker_harness: BinderHarness) -> None:
    destination = broker_harness.unique("springCloudBus")
    config = deep_merge(broker_harness.binder_config(), {"bus": {"destination": destination}})
    node = StreamApp("billing", config=config)
    bus = Bus(node)
    wire = StreamApp(
        "tap", config={**config, "bindings": {"tap-in-0": {"destination": destination}}}
    )
    seen: list[Message[bytes]] = []

    @wire.sink
    async def tap(msg: Message[bytes]) -> None:
        seen.append(msg)

    async with wire.run(), node.run():
        reply = await bus.refresh(wait=broker_harness.timeout, expect=1)
        with anyio.fail_after(broker_harness.timeout):
            while len(seen) < 2:
                await anyio.sleep(0.05)

    assert reply.nodes == (bus.id,)
    refresh, ack = (orjson.loads(m.payload) for m in seen)
    assert list(refresh) == ["type", "destinationService", "id", "originService", "timestamp"]
    assert refresh["type"] == "RefreshRemoteApplicationEvent"
    assert list(ack) == [
        "type",
        "ackDestinationService",
        "ackId",
        "destinationService",
        "event",
        "id",
        "originService",
        "timestamp",
    ]
    assert (ack["ackId"], ack["originService"]) == (refresh["id"], bus.id)
    assert all(mime_of(m.headers["contentType"]) == "application/json" for m in seen)
