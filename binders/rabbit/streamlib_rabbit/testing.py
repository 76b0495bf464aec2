"""pytest plugin ``streamlib_rabbit``: the rabbit binder's conformance harness.

The ``rabbit_harness`` fixture needs the ``rabbit_url`` fixture (streamlib's broker fixtures).
Dead letters are read from ``<destination>.<group>.dlq`` with plain aio-pika.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractConnection

from streamlib.binder import CONTENT_TYPE, Envelope
from streamlib.testing import BinderHarness

from . import naming


def _text(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value)
    return value


class RabbitHarness(BinderHarness):
    """The rabbit binder against the broker at ``url``."""

    name = "rabbit"
    settle = 0.3

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: AbstractConnection | None = None

    def binder_config(self) -> Mapping[str, Any]:
        return {
            "binders": {"rabbit": {"type": "rabbit", "url": self.url}},
            "default-binder": "rabbit",
        }

    async def _connect(self) -> AbstractConnection:
        if self._connection is None or self._connection.is_closed:
            self._connection = await aio_pika.connect(self.url)
        return self._connection

    async def dead_letters(self, destination: str, group: str, expected: int) -> list[Envelope]:
        queue_name = naming.dlq(naming.group_queue(destination, group))
        letters: list[Envelope] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        settle_until: float | None = None
        connection = await self._connect()
        while True:
            try:
                async with connection.channel() as probe:
                    await probe.declare_queue(queue_name, passive=True)
                break
            except aiormq.exceptions.ChannelNotFoundEntity:
                if loop.time() >= deadline:
                    return letters  # no DLQ: no dead letters
                await asyncio.sleep(0.05)
        async with connection.channel() as channel:
            queue = await channel.declare_queue(queue_name, passive=True)
            while True:
                message = await queue.get(no_ack=True, fail=False)
                if message is not None:
                    headers = {k: _text(v) for k, v in (message.headers or {}).items()}
                    key = headers.pop(naming.KEY_HEADER, None)
                    if message.content_type:
                        headers[CONTENT_TYPE] = message.content_type
                    letters.append(
                        Envelope(
                            message.body,
                            headers,
                            key,
                            destination=queue_name,
                            offset=message.delivery_tag,
                        )
                    )
                    continue
                now = loop.time()
                if settle_until is None and (len(letters) >= expected or now >= deadline):
                    settle_until = now + self.settle
                if settle_until is not None and now >= settle_until:
                    return letters
                await asyncio.sleep(0.02)

    async def aclose(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


@pytest.fixture
async def rabbit_harness(rabbit_url: str) -> AsyncIterator[BinderHarness]:
    """The rabbit binder's conformance harness, on the broker of ``rabbit_url``."""
    harness = RabbitHarness(rabbit_url)
    yield harness
    await harness.aclose()
