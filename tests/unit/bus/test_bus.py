"""The Bus on the in-memory binder: several apps in one process share one memory broker."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from pydantic import BaseModel, SecretStr

from streamlib import Message, StreamApp
from streamlib.bus import (
    Bus,
    EnvironmentChangeRemoteApplicationEvent,
    RemoteApplicationEvent,
    register_event,
)
from streamlib.bus.signing import SIGNATURE_HEADER, sign
from streamlib.refresh import Settings

pytestmark = pytest.mark.anyio


class Greeting(BaseModel):
    message: str = "hello"
    punctuation: str = "!"


@register_event
class PingRemoteApplicationEvent(RemoteApplicationEvent):
    """Sent after an event under test: once a node acks the ping, it has handled the event
    before it (each node handles bus events one at a time, in order)."""


@dataclass
class Node:
    app: StreamApp
    bus: Bus
    greeting: Settings[Greeting]
    path: Path
    config: dict[str, Any]
    changes: list[frozenset[str]] = field(default_factory=list)

    def set_file(self, **greeting: str) -> None:
        self.config["greeting"] = greeting
        self.path.write_text(yaml.safe_dump(self.config))


class Estate:
    """Apps on one private memory namespace, stopped at the end of the test."""

    def __init__(self, tmp_path: Path, stack: AsyncExitStack) -> None:
        self.tmp_path = tmp_path
        self.stack = stack
        self.namespace = uuid.uuid4().hex

    async def node(
        self, name: str, index: int = 0, count: int = 1, bus: dict[str, Any] | None = None
    ) -> Node:
        config: dict[str, Any] = {
            "name": name,
            "instance-index": index,
            "instance-count": count,
            "binders": {"mem": {"type": "memory", "namespace": self.namespace}},
            "greeting": {"message": "hello"},
        }
        if bus:
            config["bus"] = bus
        path = self.tmp_path / f"{name}-{index}.yaml"
        path.write_text(yaml.safe_dump(config))
        app = StreamApp(name, config=path)
        node = Node(app, Bus(app), app.settings("greeting", Greeting), path, config)
        app.on_refresh(node.changes.append)
        await self.stack.enter_async_context(app.run())
        return node

    async def tap(self) -> list[Message[bytes]]:
        """Every message on the bus destination, as received by an app without a Bus."""
        seen: list[Message[bytes]] = []
        app = StreamApp(
            "tap",
            config={
                "binders": {"mem": {"type": "memory", "namespace": self.namespace}},
                "bindings": {"tap-in-0": {"destination": "springCloudBus"}},
            },
        )

        @app.sink
        async def tap(msg: Message[bytes]) -> None:
            seen.append(msg)

        await self.stack.enter_async_context(app.run())
        return seen

    async def plain_app(self, name: str) -> StreamApp:
        """An app without a Bus, to put raw bytes on the bus destination."""
        config = {"binders": {"mem": {"type": "memory", "namespace": self.namespace}}}
        app = StreamApp(name, config=config)
        await self.stack.enter_async_context(app.run())
        return app


@pytest.fixture
async def estate(tmp_path: Path) -> AsyncIterator[Estate]:
    async with AsyncExitStack() as stack:
        yield Estate(tmp_path, stack)


async def handled_everything_before(sender: Node, *targets: Node) -> None:
    """Wait until each target acked a ping sent after the events under test."""
    for target in targets:
        reply = await sender.bus.publish(
            PingRemoteApplicationEvent(destination_service=target.bus.id), wait=5, expect=1
        )
        assert reply.nodes == (target.bus.id,)


def refresh_lines(caplog: pytest.LogCaptureFixture, node: Node) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith(f"bus {node.bus.id}: RefreshRemoteApplicationEvent")
    ]


async def test_refresh_to_billing_refreshes_exactly_the_billing_nodes(
    estate: Estate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamlib.bus")
    billing = [await estate.node("billing", i, 2) for i in range(2)]
    audit = await estate.node("audit")
    for node in (*billing, audit):
        node.set_file(message="bonjour")

    reply = await billing[0].bus.refresh("billing", wait=5, expect=2)

    assert reply.event.destination_service == "billing:**"
    assert sorted(reply.nodes) == sorted(n.bus.id for n in billing)
    for node in billing:
        assert node.greeting.value.message == "bonjour"
        assert node.changes == [frozenset({"greeting.message"})]
    await handled_everything_before(billing[1], audit)
    assert audit.greeting.value.message == "hello"
    assert audit.changes == []
    # The origin handled its own event once, when it came back from the broker.
    assert len(refresh_lines(caplog, billing[0])) == 1
    assert refresh_lines(caplog, audit) == []


async def test_refresh_to_one_instance_refreshes_only_that_instance(estate: Estate) -> None:
    billing = [await estate.node("billing", i, 2) for i in range(2)]
    for node in billing:
        node.set_file(message="hej")

    reply = await billing[0].bus.refresh("billing:1", wait=5, expect=1)

    assert reply.nodes == (billing[1].bus.id,)
    assert billing[1].greeting.value.message == "hej"
    await handled_everything_before(billing[1], billing[0])
    assert billing[0].greeting.value.message == "hello"


async def test_env_sets_a_key_on_every_node_and_listeners_see_the_key(estate: Estate) -> None:
    nodes = [await estate.node("billing", 0, 2), await estate.node("billing", 1, 2)]
    nodes.append(await estate.node("audit"))

    reply = await nodes[2].bus.env({"greeting.punctuation": "?"}, wait=5, expect=3)

    assert reply.event.destination_service == "**"
    assert sorted(reply.nodes) == sorted(n.bus.id for n in nodes)
    for node in nodes:
        assert node.greeting.value.punctuation == "?"
        assert node.greeting.value.message == "hello"
        assert node.changes == [frozenset({"greeting.punctuation"})]


async def test_settings_are_frozen_between_refreshes(estate: Estate) -> None:
    node = await estate.node("billing")
    before = node.greeting.value
    with pytest.raises(ValueError, match="frozen"):
        before.message = "changed in place"
    node.set_file(message="ciao")
    await node.bus.refresh(wait=5, expect=1)
    assert node.greeting.value.message == "ciao"
    assert before.message == "hello"


async def test_acks_answer_each_event_and_are_not_acked(estate: Estate) -> None:
    billing = await estate.node("billing")
    audit = await estate.node("audit")
    tapped = await estate.tap()

    reply = await audit.bus.refresh("billing", wait=5, expect=1)
    await handled_everything_before(audit, billing, audit)

    assert reply.nodes == (billing.bus.id,)
    seen = [orjson.loads(m.payload) for m in tapped]
    types = [e["type"] for e in seen]
    refresh_id = reply.event.id
    acks = [e for e in seen if e["type"] == "AckRemoteApplicationEvent"]
    refresh_acks = [e for e in acks if e["ackId"] == refresh_id]
    assert refresh_acks == [
        {
            "type": "AckRemoteApplicationEvent",
            "ackDestinationService": "billing:**",
            "ackId": refresh_id,
            "destinationService": "**",
            "event": "org.springframework.cloud.bus.event.RefreshRemoteApplicationEvent",
            "id": refresh_acks[0]["id"],
            "originService": billing.bus.id,
            "timestamp": refresh_acks[0]["timestamp"],
        }
    ]
    # Two pings and the refresh were acked once each; no ack was acked.
    assert types.count("AckRemoteApplicationEvent") == 3
    assert not any(e["ackId"] in {a["id"] for a in acks} for e in acks)


async def test_a_spring_event_from_the_wire_is_handled_and_acked(estate: Estate) -> None:
    billing = await estate.node("billing")
    console = await estate.node("console")
    billing.set_file(message="from spring")
    wire = await estate.plain_app("spring")
    event_id = str(uuid.uuid4())
    spring_json = (
        '{"type":"RefreshRemoteApplicationEvent","destinationService":"billing:**",'
        f'"id":"{event_id}","originService":"{console.bus.id}","timestamp":1795628167686}}'
    ).encode()

    await wire.send("springCloudBus", spring_json, headers={"contentType": "application/json"})
    await handled_everything_before(console, billing)

    assert billing.greeting.value.message == "from spring"


async def test_unknown_event_type_is_ignored_and_the_node_keeps_going(
    estate: Estate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamlib.bus")
    billing = await estate.node("billing")
    console = await estate.node("console")
    wire = await estate.plain_app("wire")

    await wire.send(
        "springCloudBus",
        b'{"type":"CacheEvictRemoteApplicationEvent","destinationService":"**","id":"e-1",'
        b'"originService":"x:0:y","timestamp":1}',
    )
    await wire.send("springCloudBus", b"\xff not json")
    await handled_everything_before(console, billing)

    assert "ignoring event e-1 of unknown type CacheEvictRemoteApplicationEvent" in caplog.text
    assert "ignoring a malformed event" in caplog.text
    assert billing.app.binding("springCloudBus-in-0").is_running


async def test_with_signing_a_forged_event_changes_nothing_and_is_logged(
    estate: Estate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamlib.bus")
    key = {"signing-key": "s3cret-key"}
    billing = await estate.node("billing", bus=key)
    console = await estate.node("console", bus=key)
    forger = await estate.node("forger", bus={"signing-key": "wrong-key"})
    unsigned = await estate.plain_app("unsigned")
    billing.set_file(message="forged")

    forged = await forger.bus.env({"greeting.message": "forged"}, "billing", wait=0)
    await unsigned.send(
        "springCloudBus",
        EnvironmentChangeRemoteApplicationEvent(
            origin_service="x:0:y", values={"greeting.message": "unsigned"}
        ).to_json(),
    )
    await handled_everything_before(console, billing)

    assert billing.greeting.value.message == "hello"
    assert billing.changes == []
    rejected = [r for r in caplog.records if "without a valid signature" in r.getMessage()]
    assert len(rejected) >= 4  # billing and console each rejected both
    assert "s3cret" not in caplog.text and "wrong-key" not in caplog.text
    assert forged.acks == ()

    signed = await console.bus.refresh("billing", wait=5, expect=1)
    assert signed.nodes == (billing.bus.id,)
    assert billing.greeting.value.message == "forged"


async def test_signed_events_carry_the_signature_header(estate: Estate) -> None:
    node = await estate.node("billing", bus={"signing-key": "k"})
    tapped = await estate.tap()
    await node.bus.refresh(wait=5, expect=1)
    headers = [m.headers for m in tapped]
    assert headers and all(h[SIGNATURE_HEADER].startswith("sha256=") for h in headers)
    assert all(h["contentType"] == "application/json" for h in headers)


async def test_publishing_needs_a_running_app(tmp_path: Path) -> None:
    app = StreamApp("idle", config={"binders": {"m": {"type": "memory"}}})
    bus = Bus(app)
    with pytest.raises(Exception, match="running"):
        await bus.refresh()


async def test_a_disabled_bus_does_not_listen(estate: Estate) -> None:
    node = await estate.node("billing", bus={"enabled": False})
    assert not node.app.binding("springCloudBus-in-0").is_running


async def test_two_nodes_with_one_bus_id_are_reported(
    estate: Estate, caplog: pytest.LogCaptureFixture
) -> None:
    first = await estate.node("billing", 0, 2, bus={"id": "billing:shared"})
    second = await estate.node("billing", 1, 2, bus={"id": "billing:shared"})
    unique = await estate.node("audit")
    await first.bus.refresh("audit", wait=5, expect=1)
    await handled_everything_before(unique, second)
    # Each of the two sees an event of the other (the refresh, the ack of the ping) once.
    warnings = [r.getMessage() for r in caplog.records if "uses this node's id" in r.getMessage()]
    assert len(warnings) == 2
    assert all("billing:shared" in w for w in warnings)
    assert not any(unique.bus.id in w for w in warnings)


async def test_with_signing_a_replayed_event_is_refused_and_logged(
    estate: Estate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="streamlib.bus")
    key = {"signing-key": "s3cret-key"}
    billing = await estate.node("billing", bus=key)
    console = await estate.node("console", bus=key)
    tapped = await estate.tap()
    replayer = await estate.plain_app("replayer")

    first = await console.bus.env({"greeting.message": "one"}, "billing", wait=5, expect=1)
    assert first.nodes == (billing.bus.id,)
    second = await console.bus.env({"greeting.message": "two"}, "billing", wait=5, expect=1)
    assert second.nodes == (billing.bus.id,)
    [captured] = [m for m in tapped if orjson.loads(m.payload)["id"] == first.event.id]
    await replayer.send("springCloudBus", captured.payload, headers=captured.headers)
    await handled_everything_before(console, billing)

    assert billing.greeting.value.message == "two"
    acks_of_first = [m for m in tapped if orjson.loads(m.payload).get("ackId") == first.event.id]
    assert len(acks_of_first) == 1  # the original's; the replay got none
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any(first.event.id in line and "already received" in line for line in refused), refused


@pytest.mark.parametrize("skew_s", [-600, 600])
async def test_with_signing_an_event_outside_the_replay_window_is_refused(
    estate: Estate, caplog: pytest.LogCaptureFixture, skew_s: int
) -> None:
    caplog.set_level(logging.INFO, logger="streamlib.bus")
    billing = await estate.node("billing", bus={"signing-key": "k", "replay-window": 300})
    console = await estate.node("console", bus={"signing-key": "k"})
    tapped = await estate.tap()
    sender = await estate.plain_app("sender")
    stale = EnvironmentChangeRemoteApplicationEvent(
        origin_service="console:0:x",
        destination_service="billing:**",
        values={"greeting.message": "stale"},
        timestamp=int((time.time() - skew_s) * 1000),
    )
    body = stale.to_json()
    await sender.send(
        "springCloudBus", body, headers={SIGNATURE_HEADER: sign(SecretStr("k"), body)}
    )
    await handled_everything_before(console, billing)

    assert billing.greeting.value.message == "hello"
    assert not [m for m in tapped if orjson.loads(m.payload).get("ackId") == stale.id]
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any(stale.id in line and "bus.replay-window (300s)" in line for line in refused)

    fresh = await console.bus.env({"greeting.message": "fresh"}, "billing", wait=5, expect=1)
    assert fresh.nodes == (billing.bus.id,)
    assert billing.greeting.value.message == "fresh"
