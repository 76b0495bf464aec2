"""A streamlib producer -> a Java consumer in a group.

The JSON payload binds to the Java record, the content type arrives as Spring expects it, the
group's durable subscription (``required-groups``) keeps what was sent before the Java app
started, every group gets every message once, and a Java and a streamlib member of one group
share its messages without duplicates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from interop_support import Broker, JavaApp, Order, Spring, wait_count, wait_until

from streamlib import Message, StreamApp

pytestmark = [pytest.mark.interop, pytest.mark.anyio]


def sink_app(broker: Broker, name: str, dest: str, group: str, into: list[Order]) -> StreamApp:
    app = StreamApp(
        name,
        config=broker.streamlib_config(
            name, {"collect-in-0": {"destination": dest, "group": group}}
        ),
    )

    @app.sink
    async def collect(msg: Message[Order]) -> None:
        into.append(msg.payload)

    return app


def producer_app(broker: Broker, dest: str, required_groups: list[str]) -> StreamApp:
    config = broker.streamlib_config(
        "py-producer",
        {"orders-out-0": {"destination": dest, "producer": {"required-groups": required_groups}}},
    )
    return StreamApp("py-producer", config=config)


async def send_orders(producer: StreamApp, seqs: range) -> None:
    for seq in seqs:
        order = Order(key=f"k{seq % 3}", seq=seq, note="py")
        await producer.send("orders-out-0", order, key=order.key, headers={"tenant": "acme"})


def java_consumer(spring: Spring, dest: str, group: str) -> JavaApp:
    return spring.start(
        "consumer",
        {
            "spring.cloud.stream.bindings.sink-in-0.destination": dest,
            "spring.cloud.stream.bindings.sink-in-0.group": group,
        },
    )


async def test_streamlib_producer_feeds_a_java_consumer_group(
    broker: Broker, spring: Spring, unique: Callable[[str], str]
) -> None:
    dest, group, total = unique("interop-groups"), "jg", 12
    audit: list[Order] = []
    producer = producer_app(broker, dest, [group])
    async with producer.run(), sink_app(broker, "py-audit", dest, "audit", audit).run():
        # Sent before any member of the group runs: required-groups keeps them for it.
        await send_orders(producer, range(total))
        java = java_consumer(spring, dest, group)
        await java.wait_for(
            lambda rs: sum(r["event"] == "received" for r in rs) >= total,
            f"{total} records at the Java consumer",
        )
        await wait_count(audit, total, "records in group audit")

    records = java.records("received")
    assert sorted(r["seq"] for r in records) == list(range(total))
    for record in records:
        assert record["payloadClass"] == "io.streamlib.interop.Order"
        assert record["note"] == "py"
        assert record["key"] == f"k{record['seq'] % 3}"
        assert_envelope(broker, record)
    assert sorted(o.seq for o in audit) == list(range(total)), "every group gets every message"


async def test_java_and_streamlib_members_share_one_group(
    broker: Broker, spring: Spring, unique: Callable[[str], str]
) -> None:
    dest, group, total = unique("interop-mixed"), "mixed", 20
    shared: list[Order] = []
    producer = producer_app(broker, dest, [group])
    async with producer.run():
        java = java_consumer(spring, dest, group)
        await java.wait_ready()
        # Kafka: the streamlib member must speak an assignment protocol the Java member knows.
        async with sink_app(broker, "py-member", dest, group, shared).run():
            await send_orders(producer, range(total))

            def in_group() -> list[int]:
                return [r["seq"] for r in java.records("received")] + [o.seq for o in shared]

            await wait_until(lambda: len(in_group()) >= total, f"{total} records in {group}")
    assert sorted(in_group()) == list(range(total)), "each message once within the group"


def assert_envelope(broker: Broker, record: dict[str, Any]) -> None:
    """What Spring made of the envelope streamlib wrote (content type, user header, key)."""
    headers, types = record["headers"], record["headerTypes"]
    # Spring normalizes the content type to a MimeType once it has used it to convert.
    assert headers["contentType"] == "application/json", headers
    assert types["contentType"] == "org.springframework.util.MimeType", types
    # Kafka: spring_json_header_types typed the header; RabbitMQ: an AMQP string header.
    assert headers["tenant"] == "acme", headers
    assert types["tenant"] == "java.lang.String", types
    assert "spring_json_header_types" not in headers, headers
    if broker.name == "kafka":
        assert headers["kafka_receivedMessageKey"] == record["key"], headers
