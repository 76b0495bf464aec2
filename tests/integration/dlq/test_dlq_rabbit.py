"""``streamlib dlq replay`` on RabbitMQ when the broker cannot take a copy."""

from __future__ import annotations

from pathlib import Path

import aio_pika
import pytest
from dlq_support import INPUT, OUTPUT, PoisonApp, dlq_size, run, wait_dlq_size, write_config

from streamlib.testing import BinderHarness

pytestmark = [pytest.mark.rabbit, pytest.mark.anyio]


async def test_a_copy_the_broker_returns_leaves_its_dead_letter_in_the_dlq(
    rabbit_harness: BinderHarness, rabbit_url: str, tmp_path: Path
) -> None:
    destination, group = rabbit_harness.unique("dlq-unroutable"), "billing"
    config = write_config(rabbit_harness, tmp_path / "streamlib.yaml", destination, group)
    nowhere = rabbit_harness.unique("dlq-nowhere")
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()
        # An exchange no queue is bound to: the broker returns a mandatory publish.
        exchange = await channel.declare_exchange(nowhere, aio_pika.ExchangeType.TOPIC)
        node = PoisonApp(config)
        node.poison = {0, 1}
        async with node.app.run():
            for seq in range(2):
                await node.app.send(OUTPUT, {"seq": seq})
            await wait_dlq_size(config, 2, rabbit_harness.timeout)
        failed = await run(
            "replay", INPUT, "--config", str(config), "--to", nowhere, cwd=tmp_path, code=2
        )
        assert "returned the message" in failed.stderr and nowhere in failed.stderr, failed.stderr
        assert await dlq_size(config) == 2
        await exchange.delete()


async def test_a_replay_the_broker_refuses_part_of_removes_only_the_confirmed_ones(
    rabbit_harness: BinderHarness, rabbit_url: str, tmp_path: Path
) -> None:
    destination, group = rabbit_harness.unique("dlq-partial"), "billing"
    config = write_config(rabbit_harness, tmp_path / "streamlib.yaml", destination, group)
    target = rabbit_harness.unique("dlq-full")
    connection = await aio_pika.connect(rabbit_url)
    async with connection:
        channel = await connection.channel()
        # Room for 2: the broker confirms the first two copies and refuses (nacks) the rest.
        exchange = await channel.declare_exchange(target, aio_pika.ExchangeType.TOPIC)
        full = await channel.declare_queue(
            target, arguments={"x-max-length": 2, "x-overflow": "reject-publish"}
        )
        await full.bind(exchange, "#")
        node = PoisonApp(config)
        node.poison = set(range(5))
        async with node.app.run():
            for seq in range(5):
                await node.app.send(OUTPUT, {"seq": seq})
            await wait_dlq_size(config, 5, rabbit_harness.timeout)
        failed = await run(
            "replay", INPUT, "--config", str(config), "--to", target, cwd=tmp_path, code=2
        )
        assert "did not accept" in failed.stderr, failed.stderr
        taken = []
        while (message := await full.get(no_ack=True, fail=False)) is not None:
            taken.append(message.body)
        assert taken == [b'{"seq":0}', b'{"seq":1}']
        assert await dlq_size(config) == 3, "the refused copies' messages stay in the DLQ"
        await full.delete()
        await exchange.delete()
