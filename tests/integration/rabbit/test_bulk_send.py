"""``send_many`` on the rabbit producer: everything arrives, in order, within
``max-in-flight``; one confirmation that fails, naming the exchange, if any was refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import aio_pika
import pytest
from batch_support import binder, item, producer_spec
from pydantic import BaseModel
from rabbit_support import rabbit_app
from streamlib_rabbit import RabbitBinder

from streamlib.binder import BulkProducer, PublishError

pytestmark = [pytest.mark.anyio, pytest.mark.rabbit]


class Seq(BaseModel):
    seq: int


@pytest.fixture
async def rabbit(rabbit_url: str, unique: Callable[[str], str]) -> AsyncIterator[RabbitBinder]:
    b = binder(rabbit_url, unique("bulk"), **{"max-in-flight": 200})
    yield b
    await b.aclose()


async def drain(url: str, queue: str) -> list[int]:
    seqs: list[int] = []
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            seqs.append(json.loads(message.body)["seq"])
    return seqs


async def consume(url: str, queue: str, count: int) -> list[int]:
    """The first ``count`` seqs of ``queue``, in queue order."""
    seqs: list[int] = []
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        q = await channel.declare_queue(queue, passive=True)
        async with asyncio.timeout(30), q.iterator(no_ack=True) as messages:
            async for message in messages:
                seqs.append(json.loads(message.body)["seq"])
                if len(seqs) == count:
                    break
    return seqs


async def test_a_bulk_send_arrives_complete_and_in_order_within_max_in_flight(
    rabbit: RabbitBinder, rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("bulk")
    producer = await rabbit.bind_producer(producer_spec("out", dest))
    assert isinstance(producer, BulkProducer)
    raw = await producer._publisher.underlay()
    most = 0
    sending = True

    async def sample() -> None:
        nonlocal most
        while sending:
            most = max(most, len(raw.confirmations))
            await asyncio.sleep(0)

    sampler = asyncio.create_task(sample())
    try:
        confirm = await producer.send_many([item(seq) for seq in range(5000)])
        await confirm
    finally:
        sending = False
        await sampler
    assert await consume(rabbit_url, f"{dest}.r", 5000) == list(range(5000))
    assert await drain(rabbit_url, f"{dest}.r") == []
    assert 0 < most <= 200


async def test_a_bulk_send_the_broker_refuses_in_part_raises_naming_the_exchange(
    rabbit: RabbitBinder, rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("refused")
    full = {"max-length": 10, "overflow": "reject-publish"}
    producer = await rabbit.bind_producer(producer_spec("out", dest, **full))
    confirm = await producer.send_many([item(seq) for seq in range(20)])
    with pytest.raises(PublishError) as caught:
        await confirm
    assert f"bulk publish to {dest!r}: 10 of 20 messages were not confirmed" in str(caught.value)
    assert "did not accept" in str(caught.value)
    assert caught.value.retriable
    with pytest.raises(PublishError):
        await confirm  # the same answer again
    assert await drain(rabbit_url, f"{dest}.r") == list(range(10))


async def test_a_returned_message_fails_the_bulk_send(
    rabbit: RabbitBinder, unique: Callable[[str], str]
) -> None:
    dest = unique("nobody")
    producer = await rabbit.bind_producer(
        producer_spec("out", dest, groups=(), **{"mandatory": True})
    )
    confirm = await producer.send_many([item(seq) for seq in range(3)])
    with pytest.raises(PublishError) as caught:
        await confirm
    assert f"bulk publish to {dest!r}: 3 of 3" in str(caught.value)
    assert "returned" in str(caught.value)
    assert not caught.value.retriable


async def test_app_send_many_raises_when_the_broker_refuses_part_of_it(
    rabbit_url: str, unique: Callable[[str], str]
) -> None:
    dest = unique("app-refused")
    producer = {"required-groups": ["r"], "max-length": 3, "overflow": "reject-publish"}
    app = rabbit_app(
        rabbit_url, unique("sender"), {"send-out-0": {"destination": dest, "producer": producer}}
    )
    async with app.run():
        with pytest.raises(PublishError) as caught:
            await app.send_many("send-out-0", [Seq(seq=seq) for seq in range(5)])
    assert f"bulk publish to {dest!r}: 2 of 5 messages were not confirmed" in str(caught.value)
    assert await drain(rabbit_url, f"{dest}.r") == [0, 1, 2]
