"""What streamlib puts on the wire is what Spring puts there (WIRE.md, RabbitMQ section)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from pydantic import BaseModel
from rabbit_support import rabbit_app
from streamlib_rabbit import RabbitAttr

from streamlib import Message
from streamlib.errors import BrokerError, PublishError
from streamlib.testing import Collector

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit]


class Item(BaseModel):
    key: str
    seq: int


@pytest.fixture
async def amqp(rabbit_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        yield await connection.channel()


async def tap(channel: aio_pika.abc.AbstractChannel, exchange: str, key: str) -> AbstractQueue:
    """A private queue bound to ``exchange`` with ``key`` (the exchange must exist)."""
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, key)
    return queue


async def take(queue: AbstractQueue, count: int) -> list[AbstractIncomingMessage]:
    got: list[AbstractIncomingMessage] = []
    async with asyncio.timeout(10):
        while len(got) < count:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.02)
            else:
                got.append(message)
    return got


async def test_message_has_properties_and_no_headers(
    rabbit_url: str, unique: Callable[[str], str], amqp: aio_pika.abc.AbstractChannel
) -> None:
    dest = unique("wire")
    app = rabbit_app(rabbit_url, "wire", {})
    async with app.run():
        await app.send(dest, Item(key="k", seq=1))  # declares the exchange
        queue = await tap(amqp, dest, "#")
        before = int(time.time())
        await app.send(dest, Item(key="k", seq=2))
        [message] = await take(queue, 1)
    assert message.body == b'{"key":"k","seq":2}'
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.priority == 0
    assert message.message_id
    assert message.timestamp is not None
    assert before <= message.timestamp.timestamp() <= time.time() + 1
    assert message.timestamp.timestamp() == int(message.timestamp.timestamp())
    assert message.headers in ({}, None)
    assert message.exchange == dest
    assert message.routing_key == dest


async def test_user_headers_and_key_travel_as_amqp_headers(
    rabbit_url: str, unique: Callable[[str], str], amqp: aio_pika.abc.AbstractChannel
) -> None:
    dest = unique("wire")
    app = rabbit_app(rabbit_url, "wire", {})
    async with app.run():
        await app.send(dest, Item(key="k", seq=1))
        queue = await tap(amqp, dest, "#")
        await app.send(dest, Item(key="k", seq=2), key="c-42", headers={"x-trace": "t-1"})
        [message] = await take(queue, 1)
    assert message.headers == {"x-trace": "t-1", "streamlib-key": "c-42"}
    assert message.content_type == "application/json"


async def test_partitioned_producer_routes_by_partition_without_scst_partition(
    rabbit_url: str, unique: Callable[[str], str], amqp: aio_pika.abc.AbstractChannel
) -> None:
    dest = unique("wire")
    producer = {"partition-key": "payload.key", "partition-count": 4}
    app = rabbit_app(rabbit_url, "wire", {dest: {"producer": producer}})
    async with app.run():
        await app.send(dest, Item(key="k0", seq=0))
        queue = await tap(amqp, dest, "#")
        # WIRE.md vectors: "k0" -> 1, "日本" -> 3, "polygenelubricants" -> 0 with 4 partitions
        for seq, key in enumerate(["k0", "日本", "polygenelubricants"]):
            await app.send(dest, Item(key=key, seq=seq))
        messages = await take(queue, 3)
    assert [m.routing_key for m in messages] == [f"{dest}-1", f"{dest}-3", f"{dest}-0"]
    for message in messages:
        assert message.headers in ({}, None)
        assert message.content_type == "application/json"


async def test_message_from_a_plain_amqp_client_is_received(
    rabbit_url: str, unique: Callable[[str], str], amqp: aio_pika.abc.AbstractChannel
) -> None:
    dest = unique("wire")
    got: Collector[Message[Item]] = Collector()
    app = rabbit_app(rabbit_url, "wire", {"receive-in-0": {"destination": dest, "group": "g"}})

    @app.sink
    async def receive(msg: Message[Item]) -> None:
        got.add(msg)

    async with app.run():
        exchange = await amqp.get_exchange(dest)
        body = b'{"key":"k","seq":5}'
        await exchange.publish(
            aio_pika.Message(body, content_type="application/json", headers={"h": "v"}),
            routing_key=dest,
        )
        [msg] = await got.wait_for(1, 10)
    assert msg.payload == Item(key="k", seq=5)
    assert msg.key is None
    assert msg.headers["contentType"] == "application/json"
    assert msg.headers["h"] == "v"
    assert msg.destination == dest
    tag = msg.extra(RabbitAttr.delivery_tag)
    assert tag >= 1
    with pytest.deprecated_call(match="RabbitAttr.delivery_tag"):
        assert msg.offset == tag
    assert msg.extra(RabbitAttr.queue) == f"{dest}.g"
    assert msg.extra(RabbitAttr.exchange) == dest
    assert msg.extra(RabbitAttr.routing_key) == dest
    assert msg.extra(RabbitAttr.redelivered) is False


async def test_unroutable_mandatory_message_fails_with_publish_error(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("nowhere")
    app = rabbit_app(rabbit_url, "wire", {dest: {"producer": {"mandatory": True}}})
    async with app.run():
        with pytest.raises(PublishError, match="NO_ROUTE"):
            await app.send(dest, Item(key="k", seq=1))
        # the producer keeps working once a queue is there
        app2 = rabbit_app(rabbit_url, "late", {"t-in-0": {"destination": dest, "group": "g"}})
        got: Collector[int] = Collector()

        @app2.sink
        async def t(item: Item) -> None:
            got.add(item.seq)

        async with app2.run():
            await app.send(dest, Item(key="k", seq=2))
            assert await got.wait_for(1, 10) == [2]


async def test_unroutable_message_without_mandatory_is_dropped_quietly(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("nowhere")
    app = rabbit_app(rabbit_url, "wire", {})
    async with app.run():
        await app.send(dest, Item(key="k", seq=1))


async def test_missing_exchange_fails_the_send_and_the_producer_recovers(
    rabbit_url: str, unique: Callable[[str], str], amqp: aio_pika.abc.AbstractChannel
) -> None:
    dest = unique("missing")
    app = rabbit_app(rabbit_url, "wire", {dest: {"producer": {"declare-exchange": False}}})
    async with app.run():
        with pytest.raises(BrokerError, match="NOT_FOUND"):
            await app.send(dest, Item(key="k", seq=1))
        await amqp.declare_exchange(dest, aio_pika.ExchangeType.TOPIC, auto_delete=True)
        queue = await tap(amqp, dest, "#")
        await app.send(dest, Item(key="k", seq=2))
        [message] = await take(queue, 1)
    assert message.body == b'{"key":"k","seq":2}'
