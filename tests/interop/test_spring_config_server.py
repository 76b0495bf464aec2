"""Spring Cloud Config Server, two streamlib nodes and a Spring node sharing one repository.

The Config Server (the interop application's ``configserver`` role, on a native repository in
a temporary directory, with the monitor and the bus) serves ``application.yml`` to everyone and
``pynode.yml`` to the streamlib nodes. A changed file and ``POST /monitor`` must refresh the
nodes the file belongs to, each fetching again; the others keep their values. With the server
gone, a refresh keeps the values and is not acked; start-up fails (fail-fast) or warns
(optional) naming the URI; the server's secrets never show.
"""

from __future__ import annotations

import logging
import socket
import urllib.parse
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
    Spring,
    WireTap,
    free_port,
    greetings,
    java_listening,
    wait_until,
)
from pydantic import BaseModel, SecretStr

from streamlib import ConfigServerError, StreamApp
from streamlib.bus import Bus

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

PASSWORD = "cfg-pa55-w0rd"
TOKEN = "served-t0ken-3f9a"
ORIGIN_PREFIX = "configserver:"


class Greeting(BaseModel):
    message: str = "local-default"
    token: SecretStr | None = None


class Repo:
    """The Config Server's native repository: one YAML file per application."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()

    def write(self, name: str, data: dict[str, Any]) -> None:
        (self.path / f"{name}.yml").write_text(yaml.safe_dump(data))

    def greeting(self, value: str) -> None:
        self.write(
            "application",
            {"greeting": {"message": value, "token": TOKEN}, "interop": {"greeting": value}},
        )


class PyNode:
    """A streamlib bus node configured by the Config Server (its local file names only it)."""

    def __init__(self, broker: Broker, dest: str, index: int, tmp_path: Path, uri: str) -> None:
        path = tmp_path / f"pynode-{index}.yaml"
        config = broker.streamlib_config(
            "pynode",
            {},
            instance_index=index,
            instance_count=2,
            bus={"destination": dest},
            config_server={"uri": uri, "username": "cfg", "password": PASSWORD},
            greeting={"message": "from-local-file"},
        )
        path.write_text(yaml.safe_dump(config))
        self.app = StreamApp("pynode", config=path)
        self.greeting = self.app.settings("greeting", Greeting)
        self.bus = Bus(self.app)
        self.seen: list[str] = []

        @self.bus.on_refresh
        def record(changed: frozenset[str]) -> None:
            self.seen.append(self.greeting.value.message)


def monitor(port: int, path: str) -> None:
    """``POST /monitor`` with ``path=<file>``, as a repository's webhook would."""
    data = urllib.parse.urlencode({"path": path}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/monitor", data=data, method="POST")
    with urllib.request.urlopen(request) as response:
        assert response.status == 200


def closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


async def test_monitor_refreshes_the_nodes_of_a_changed_file_from_the_config_server(
    broker: Broker,
    spring: Spring,
    unique: Callable[[str], str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for logger in ("streamlib", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger)
    dest = unique("interop-cfg-bus")
    repo = Repo(tmp_path / "repo")
    repo.greeting("v1")
    repo.write(
        "pynode",
        {
            "spring": {
                "cloud": {
                    "stream": {
                        "bindings": {
                            "orders-in-0": {
                                "group": "from-server",
                                "consumer": {"maxAttempts": 4, "backOffInitialInterval": 250},
                            }
                        }
                    }
                }
            }
        },
    )
    server_port = free_port()
    server = spring.start(
        "configserver,native",
        {
            "spring.cloud.bus.destination": dest,
            "server.port": server_port,
            "spring.cloud.config.server.native.search-locations": f"file:{repo.path}/",
        },
    )
    await server.wait_ready()
    uri = f"http://127.0.0.1:{server_port}"
    java_port = free_port()
    java = spring.start(
        "bus",
        {
            "spring.cloud.bus.destination": dest,
            "server.port": java_port,
            "spring.cloud.config.enabled": "true",
            "spring.config.import": f"configserver:{uri}",
        },
    )
    await java_listening(java, broker, dest)
    await wait_until(lambda: greetings(java) == ["v1"], "the Java node's greeting from the server")
    nodes = [PyNode(broker, dest, index, tmp_path, uri) for index in (0, 1)]
    sender = StreamApp("cli", config=broker.streamlib_config("cli", {}, bus={"destination": dest}))
    cli = Bus(sender, passive=True)
    tap = WireTap(broker, dest)
    await tap.start()
    async with nodes[0].app.run(), nodes[1].app.run(), sender.run():
        ids = {n.bus.id for n in nodes}
        for node in nodes:
            assert node.greeting.value.message == "v1"  # the server over the local file
            orders = node.app.config.binding("orders-in-0")
            assert (orders.group, orders.consumer.max_attempts) == ("from-server", 4)
            assert orders.consumer.back_off_initial_interval == 0.25

        # application.yml belongs to every application: all three nodes fetch it again.
        repo.greeting("v2")
        await anyio.to_thread.run_sync(monitor, server_port, "application.yml")
        await wait_until(lambda: all(n.seen == ["v2"] for n in nodes), "streamlib nodes at v2")
        await wait_until(lambda: greetings(java) == ["v1", "v2"], "the Java node at v2")

        # javanode.yml addresses the Java node only: the streamlib nodes keep v2.
        repo.greeting("v3")
        await anyio.to_thread.run_sync(monitor, server_port, "javanode.yml")
        await wait_until(lambda: greetings(java) == ["v1", "v2", "v3"], "the Java node at v3")
        # Bus events reach each node in order: once the next refresh is acked, the
        # javanode event before it was seen and left alone.
        reply = await cli.refresh("pynode", wait=60, expect=2)
        assert set(reply.nodes) == ids
        assert [n.seen for n in nodes] == [["v2", "v3"]] * 2

        # The server goes away: a refresh keeps the values in force and is not acked.
        server.stop()
        await wait_until(lambda: closed(server_port), "the Config Server stopped")
        reply = await cli.refresh("pynode", wait=5)
        assert reply.nodes == ()
        assert [n.seen for n in nodes] == [["v2", "v3"]] * 2
        assert [n.greeting.value.message for n in nodes] == ["v3", "v3"]
        assert all(n.greeting.value.token.get_secret_value() == TOKEN for n in nodes)
        shown = [repr(n.app.config) + repr(n.greeting) for n in nodes]

    failures = [r for r in caplog.records if "not acking" in r.getMessage()]
    assert len(failures) == 2, [r.getMessage() for r in failures]
    for record in failures:
        assert record.exc_info is not None
        assert f"{uri}/pynode/default: ConnectError" in str(record.exc_info[1])

    # Start-up with the server gone: fail-fast fails naming the URI, optional warns.
    fail_fast = StreamApp(
        "pynode",
        config={"config-server": {"uri": uri, "fail-fast": True, "retry": {"max-attempts": 2}}},
    )
    with pytest.raises(ConfigServerError, match="after 2 attempts") as caught:
        await fail_fast.start()
    assert f"{uri}/pynode/default" in str(caught.value)
    optional = StreamApp("pynode", config={"config-import": f"optional:configserver:{uri}"})
    async with optional.run():
        pass
    assert any(
        r.levelno == logging.WARNING and uri in r.getMessage() and "local" in r.getMessage()
        for r in caplog.records
    )

    wire = [orjson.loads(body) for body in await tap.bodies()]
    refreshes = [e for e in wire if e["type"] == REFRESH]
    by_monitor = [e for e in refreshes if e["originService"].startswith(ORIGIN_PREFIX)]
    assert [e["destinationService"] for e in by_monitor] == ["*:**", "javanode:**"]
    java_id = next(e["originService"] for e in wire if e["originService"].startswith("javanode:"))

    def ackers(event: dict[str, Any]) -> set[str]:
        acks = [e for e in wire if e["type"] == ACK and e["ackId"] == event["id"]]
        return {a["originService"] for a in acks} - {server_origin(wire)}

    assert ackers(by_monitor[0]) == {*ids, java_id}
    assert ackers(by_monitor[1]) == {java_id}
    shown.append(caplog.text)
    shown.append(str(caught.value))
    for text in shown:
        assert PASSWORD not in text and TOKEN not in text


def server_origin(wire: list[dict[str, Any]]) -> str:
    """The Config Server's own bus id (it refreshes on ``*`` too and acks)."""
    return next(e["originService"] for e in wire if e["originService"].startswith(ORIGIN_PREFIX))
