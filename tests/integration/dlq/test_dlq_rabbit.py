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
