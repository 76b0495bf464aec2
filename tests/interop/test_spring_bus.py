"""Spring Cloud Bus between a Java node and streamlib nodes on one bus destination.

Java's ``POST /actuator/busrefresh`` and ``/actuator/busenv`` must refresh / set keys on the
streamlib nodes, whose acks Java receives; ``streamlib bus refresh`` and ``streamlib bus env``
must do the same on the Java node and collect its ack.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
import yaml
from interop_support import (
    ACK,
    REFRESH,
    Broker,
    JavaApp,
    Spring,
    WireTap,
    bus_events,
    free_port,
    greetings,
    java_listening,
    wait_until,
)
from pydantic import BaseModel
from support.launcher import rabbitmqctl

from streamlib import StreamApp
from streamlib.bus import Bus

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

STREAMLIB = str(Path(sys.executable).with_name("streamlib"))
ENV = "EnvironmentChangeRemoteApplicationEvent"


class Greeting(BaseModel):
    message: str = "hello"


class PyNode:
    """A streamlib bus node whose ``greeting`` settings come from a YAML file."""

    def __init__(self, broker: Broker, dest: str, index: int, tmp_path: Path) -> None:
        self.path = tmp_path / f"pynode-{index}.yaml"
        self.config = broker.streamlib_config(
            "pynode", {}, instance_index=index, instance_count=2, bus={"destination": dest}
        )
        self.set_greeting("hello")
        self.app = StreamApp("pynode", config=self.path)
        self.greeting = self.app.settings("greeting", Greeting)
        self.bus = Bus(self.app)
        self.seen: list[str] = []
        self.keys: list[frozenset[str]] = []

        @self.bus.on_refresh
        def record(changed: frozenset[str]) -> None:
            self.seen.append(self.greeting.value.message)
            self.keys.append(changed)

    def set_greeting(self, message: str) -> None:
        self.path.write_text(yaml.safe_dump({**self.config, "greeting": {"message": message}}))


def java_bus_node(spring: Spring, dest: str, tmp_path: Path, greeting: str) -> tuple[JavaApp, int]:
    port = free_port()
    (tmp_path / "java.properties").write_text(f"interop.greeting={greeting}\n")
    app = spring.start(
        "bus",
        {
            "spring.cloud.bus.destination": dest,
            "server.port": port,
            "spring.config.additional-location": f"file:{tmp_path / 'java.properties'}",
        },
    )
    return app, port


async def bus_wire(tap: WireTap) -> list[dict[str, Any]]:
    """Every bus event the broker carried, as JSON."""
    return [orjson.loads(body) for body in await tap.bodies()]


async def wait_or_explain(
    condition: Callable[[], bool], what: str, tap: WireTap, java: JavaApp
) -> None:
    """``wait_until``; on timeout, fail with what the broker carried and what Java logged."""
    try:
        await wait_until(condition, what)
    except pytest.fail.Exception:
        wire = [
            (e["type"], e["originService"], e.get("ackId"), e["id"]) for e in await bus_wire(tap)
        ]
        logged = [(r["type"], r["originService"], r.get("ackId")) for r in java.records("bus")]
        pytest.fail(
            f"timed out waiting for {what}\non the wire: {wire}\nJava logged: {logged}\n"
            f"--- Java log ---\n{java.log_tail()}"
        )


def anonymous_queues(dest: str) -> list[dict[str, Any]]:
    """Name, flags and arguments of the anonymous queues on ``dest`` (RabbitMQ)."""
    columns = ("name", "durable", "auto_delete", "exclusive", "arguments")
    listing = rabbitmqctl("list_queues", *columns, "--formatter", "json", "-q")
    prefix = f"{dest}.anonymous."
    return [q for q in json.loads(listing) if q["name"].startswith(prefix)]


async def test_java_bus_events_reach_streamlib_nodes_and_java_receives_their_acks(
    broker: Broker,
    spring: Spring,
    unique: Callable[[str], str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "streamlib.bus")
    dest = unique("interop-bus")
    java, port = java_bus_node(spring, dest, tmp_path, "hello")
    await java_listening(java, broker, dest)
    nodes = [PyNode(broker, dest, index, tmp_path) for index in (0, 1)]
    tap = WireTap(broker, dest)
    await tap.start()
    async with nodes[0].app.run(), nodes[1].app.run():
        for node in nodes:
            node.set_greeting("from-java")
        (tmp_path / "java.properties").write_text("interop.greeting=from-java\n")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/actuator/busrefresh", method="POST"
        )
        with await anyio.to_thread.run_sync(urllib.request.urlopen, request) as response:
            assert response.status in (200, 204)
        await wait_until(lambda: all(n.seen for n in nodes), "both streamlib nodes refreshed")
        ids = {n.bus.id for n in nodes}

        def acked_by() -> set[str]:
            return {a["originService"] for a in bus_events(java, ACK)}

        await wait_or_explain(lambda: ids <= acked_by(), "acks of both nodes at Java", tap, java)

        # busenv: an EnvironmentChangeRemoteApplicationEvent setting a streamlib key.
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/actuator/busenv",
            data=b'{"name": "greeting.message", "value": "via-busenv"}',
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with await anyio.to_thread.run_sync(urllib.request.urlopen, request) as response:
            assert response.status in (200, 204)
        await wait_until(
            lambda: all(n.seen[-1:] == ["via-busenv"] for n in nodes), "busenv on both nodes"
        )

        def env_acked_by() -> set[str]:
            acks = bus_events(java, ACK)
            return {a["originService"] for a in acks if a["ackedEvent"].endswith(ENV)}

        await wait_or_explain(lambda: ids <= env_acked_by(), "env-change acks at Java", tap, java)
        if broker.name == "rabbit":
            # Java's and both streamlib nodes' anonymous queues look alike.
            queues = await anyio.to_thread.run_sync(anonymous_queues, dest)
            assert len(queues) == 3, queues
            for queue in queues:
                assert re.fullmatch(rf"{re.escape(dest)}\.anonymous\.[\w-]{{22}}", queue["name"])
                flags = (queue["durable"], queue["auto_delete"], queue["exclusive"])
                assert flags == (False, True, True), queue
                assert queue["arguments"] == queues[0]["arguments"], queues

    assert [n.seen for n in nodes] == [["from-java", "via-busenv"]] * 2
    for node_id in ids:
        assert re.fullmatch(r"pynode:[01]:[0-9a-f]{32}", node_id), node_id
    [refresh] = bus_events(java, REFRESH)
    assert refresh["destinationService"] == "**"
    refresh_class = f"org.springframework.cloud.bus.event.{REFRESH}"
    java_acks = [a for a in bus_events(java, ACK) if a["ackedEvent"] == refresh_class]
    assert ids <= {a["originService"] for a in java_acks}
    await wait_until(lambda: "from-java" in greetings(java), "the Java node's own refresh")
    # Java's Bus (5.0.4, Jackson 3) reads ackId/ackDestinationService of a received ack as
    # null, its own included; so compare the acks on the wire with the one Spring wrote.
    wire = await bus_wire(tap)
    acks = {e["originService"]: e for e in wire if e["type"] == ACK and e["event"] == refresh_class}
    spring_ack = next(e for origin, e in acks.items() if origin.startswith("javanode:"))
    for node_id in ids:
        ack = acks[node_id]
        assert list(ack) == list(spring_ack), (ack, spring_ack)
        assert ack["ackId"] == refresh["id"] == spring_ack["ackId"]
        assert ack["ackDestinationService"] == spring_ack["ackDestinationService"] == "**"
        assert ack["event"] == spring_ack["event"]


async def test_java_busrefresh_without_changes_calls_each_listener_once_with_no_keys(
    broker: Broker, spring: Spring, unique: Callable[[str], str], tmp_path: Path
) -> None:
    dest = unique("interop-bus")
    java, port = java_bus_node(spring, dest, tmp_path, "hello")
    await java_listening(java, broker, dest)
    nodes = [PyNode(broker, dest, index, tmp_path) for index in (0, 1)]
    async with nodes[0].app.run(), nodes[1].app.run():
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/actuator/busrefresh", method="POST"
        )
        with await anyio.to_thread.run_sync(urllib.request.urlopen, request) as response:
            assert response.status in (200, 204)
        ids = {n.bus.id for n in nodes}
        await wait_until(
            lambda: ids <= {a["originService"] for a in bus_events(java, ACK)},
            "acks of both streamlib nodes at Java",
        )
    # Each node acked after handling the refresh, so its listener has run by now.
    assert [n.keys for n in nodes] == [[frozenset()], [frozenset()]]
    assert [n.seen for n in nodes] == [["hello"], ["hello"]]


async def test_streamlib_bus_cli_reaches_a_java_node(
    broker: Broker, spring: Spring, unique: Callable[[str], str], tmp_path: Path
) -> None:
    dest = unique("interop-bus")
    java, _ = java_bus_node(spring, dest, tmp_path, "hello")
    await java_listening(java, broker, dest)
    # Java may log its first greeting just after it reports ready.
    await wait_until(lambda: greetings(java) == ["hello"], "the Java node's first greeting")
    tap = WireTap(broker, dest)
    await tap.start()
    (tmp_path / "java.properties").write_text("interop.greeting=from-python\n")
    cli_config = tmp_path / "cli.yaml"
    cli_config.write_text(
        yaml.safe_dump(broker.streamlib_config("cli", {}, bus={"destination": dest}))
    )
    output = await bus_cli(cli_config, "refresh")
    await wait_until(lambda: "from-python" in greetings(java), "the Java node refreshed")
    [refresh] = bus_events(java, REFRESH)
    assert refresh["destinationService"] == "javanode:**"
    assert refresh["originService"].startswith("streamlib-bus-cli:0:")
    java_id = next(a["originService"] for a in bus_events(java, ACK))
    assert java_id.startswith("javanode:"), java_id
    assert java_id in output, output

    # Spring's env-change sets the key in the environment (a refresh rebinds the bean).
    output = await bus_cli(cli_config, "env", "interop.greeting=via-python")
    assert java_id in output, output
    changes = java.records("env-changed")
    assert any(
        "interop.greeting" in c["keys"] and c["environmentGreeting"] == "via-python"
        for c in changes
    ), changes

    # On the wire: streamlib's events in Spring's field order, Java's acks answer their ids.
    wire = await bus_wire(tap)
    sent = {e["type"]: e for e in wire if e["originService"].startswith("streamlib-bus-cli:")}
    assert list(sent[REFRESH]) == ["type", "destinationService", "id", "originService", "timestamp"]
    assert list(sent[ENV]) == [*list(sent[REFRESH]), "values"]
    assert sent[ENV]["values"] == {"interop.greeting": "via-python"}
    answered = {e["ackId"] for e in wire if e["type"] == ACK and e["originService"] == java_id}
    assert answered == {sent[REFRESH]["id"], sent[ENV]["id"]}


async def bus_cli(config: Path, *args: str) -> str:
    """``streamlib bus ARGS`` addressed to the Java node; its output (it must exit 0)."""
    command = [
        STREAMLIB,
        *("bus", *args, "--destination", "javanode", "--expect", "1"),
        *("--wait", "30", "--config", str(config)),
    ]
    result = await anyio.run_process(command, check=False, stderr=subprocess.STDOUT)
    output: str = result.stdout.decode()
    assert result.returncode == 0, output
    return output
