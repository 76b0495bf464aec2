"""A send Kafka's limits refuse counts as a send failure of its destination, not as sent."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest
from conftest import Config
from prometheus_client.parser import text_string_to_metric_families

from streamlib import StreamApp
from streamlib.errors import PublishError

pytestmark = [pytest.mark.anyio, pytest.mark.kafka]


async def test_a_refused_send_is_a_send_failure(
    kafka_config: Config, unique: Callable[[str], str]
) -> None:
    topic = unique("refused")
    config = kafka_config(
        {}, binder={"producer": {"max-request-size": 2000}}, management={"port": 0}
    )
    app = StreamApp("sender", config=config)
    async with app.run(), aiohttp.ClientSession() as session:
        await app.send(topic, "small")
        with pytest.raises(PublishError):
            await app.send(topic, "x" * 5000)
        async with session.get(f"{app.management_url}/metrics") as response:
            text = await response.text()
    samples = {
        (s.name, s.labels.get("destination")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("streamlib_messages_sent_total", topic)] == 1
    assert samples[("streamlib_send_failures_total", topic)] == 1
