"""The DLQ commands on RabbitMQ: read, replay and purge ``<destination>.<group>.dlq`` queues.

Reading gets every message without acknowledging it and closes the channel, which puts
them all back in their places. A replay publishes each copy with publisher confirms and
``mandatory``, through the default exchange to the queue the message was dead-lettered
from (the routing key it reached the DLQ with, or ``x-death``'s queue): only the group
that failed sees it again, as in Spring AMQP's re-routing recipe. Only once the broker
confirmed the copy is the dead letter acknowledged, which takes it off the DLQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, cast

import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from streamlib.binder import (
    CONTENT_TYPE,
    REPLAY_COUNT,
    ConsumerSpec,
    DeadLetter,
    is_dead_letter_header,
    next_replay_count,
    validate,
)

from . import naming
from .errors import map_error
from .producer import Publisher
from .settings import RabbitConsumerSettings

DEFAULT_EXCHANGE = ""


def _deaths(headers: dict[str, Any]) -> list[dict[str, Any]]:
    deaths = headers.get("x-death")
    return [d for d in deaths if isinstance(d, dict)] if isinstance(deaths, list) else []


def _str(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def letter_of(message: DeliveredMessage, dlq: str, index: int) -> DeadLetter:
    """The dead letter of a message got from ``dlq``, its ``index``-th (from 1)."""
    props = message.header.properties
    headers: dict[str, Any] = dict(props.headers or {})
    key = headers.get(naming.KEY_HEADER)
    if props.content_type is not None:
        headers[CONTENT_TYPE] = props.content_type
    deaths = _deaths(headers)
    delivery = cast(Basic.GetOk, message.delivery)
    queue = _str(deaths[0].get("queue")) if deaths else None
    queue = queue or delivery.routing_key or None
    exchange = _str(headers.get("x-original-exchange"))
    routing = _str(headers.get("x-original-routingKey"))
    origin = f"queue {queue}" if queue else "unknown queue"
    if exchange is not None:
        origin += f" (exchange {exchange!r}, routing key {routing!r})"
    retries = headers.get("retry-count")
    if isinstance(retries, int):
        times: int | None = retries
    elif deaths and isinstance(deaths[0].get("count"), int):
        times = int(deaths[0]["count"])
    else:
        times = None
    moment = deaths[0].get("time") if deaths else None
    stamp = moment if isinstance(moment, datetime) else props.timestamp
    position = f"#{index}" + (f" (message id {props.message_id})" if props.message_id else "")
    return DeadLetter(
        dlq=dlq,
        position=position,
        body=message.body,
        headers=headers,
        key=key if isinstance(key, str | bytes) else None,
        timestamp=stamp.timestamp() if isinstance(stamp, datetime) else None,
        original=queue,
        origin=origin,
        times_dead_lettered=times,
        token=message,
    )


def replay_properties(message: DeliveredMessage, count: int) -> Basic.Properties:
    """The dead letter's properties for its copy: headers without the dead-letter ones and
    with ``x-replay-count``; a message id when it had none (the broker's return of an
    unroutable copy is matched to its confirmation by id)."""
    props = copy.copy(message.header.properties)
    headers = {
        k: v
        for k, v in (props.headers or {}).items()
        if not is_dead_letter_header(k) and k != REPLAY_COUNT
    }
    headers[REPLAY_COUNT] = count
    props.headers = headers
    if not props.message_id:
        props.message_id = uuid.uuid4().hex
    return props


class DlqChannel:
    """A channel on one DLQ: its size when opened, and un-acknowledged gets from it."""

    def __init__(self, channel: AbstractChannel, raw: aiormq.Channel, dlq: str) -> None:
        self.dlq = dlq
        self.size = 0
        self._channel = channel
        self._raw = raw

    @classmethod
    async def open(cls, connection: AbstractRobustConnection, dlq: str) -> DlqChannel:
        try:
            channel = await connection.channel(publisher_confirms=False)
            raw = await channel.get_underlay_channel()
        except Exception as exc:
            raise map_error(exc, f"open a channel for {dlq!r}") from exc
        opened = cls(channel, cast(aiormq.Channel, raw), dlq)
        try:
            declared = await opened._raw.queue_declare(dlq, passive=True)
            opened.size = declared.message_count or 0
        except aiormq.exceptions.ChannelNotFoundEntity:
            opened.size = 0  # never declared: nothing was dead-lettered
        except Exception as exc:
            await opened.aclose()
            raise map_error(exc, f"look up queue {dlq!r}") from exc
        return opened

    async def letters(self) -> AsyncGenerator[DeadLetter, None]:
        """The messages there were at opening (fewer if others took some), unacknowledged."""
        for index in range(1, self.size + 1):
            try:
                message = await self._raw.basic_get(self.dlq, no_ack=False)
            except Exception as exc:
                raise map_error(exc, f"get from {self.dlq!r}") from exc
            if isinstance(message.delivery, Basic.GetEmpty):
                return
            yield letter_of(message, self.dlq, index)

    async def ack(self, letters: Sequence[DeadLetter]) -> None:
        try:
            for letter in letters:
                tag = cast(Basic.GetOk, letter.token.delivery).delivery_tag
                await self._raw.basic_ack(cast(int, tag))
        except Exception as exc:
            raise map_error(exc, f"acknowledge replayed messages on {self.dlq!r}") from exc

    async def purge(self) -> int:
        if self.size == 0:
            return 0
        try:
            purged = await self._raw.queue_purge(self.dlq)
        except Exception as exc:
            raise map_error(exc, f"purge {self.dlq!r}") from exc
        return purged.message_count or 0

    async def aclose(self) -> None:
        # Closing the channel puts every message got and not acknowledged back in the queue.
        with contextlib.suppress(Exception):
            await self._channel.close()


class RabbitReplaySession:
    """Replays one DLQ: gets and acks on ``source``, copies published on ``publisher``."""

    def __init__(self, source: DlqChannel, publisher: Publisher) -> None:
        self._source = source
        self._publisher = publisher

    @property
    def size(self) -> int:
        return self._source.size

    def letters(self) -> AsyncGenerator[DeadLetter, None]:
        return self._source.letters()

    async def forward(self, letter: DeadLetter, destination: str | None) -> Awaitable[None]:
        message: DeliveredMessage = letter.token
        if destination is None:
            assert letter.original is not None
            exchange, routing_key = DEFAULT_EXCHANGE, letter.original
        else:
            exchange, routing_key = naming.exchange(destination), destination
        props = replay_properties(message, next_replay_count(letter.headers))
        return await self._publisher.publish(
            exchange, routing_key, message.body, props, mandatory=True
        )

    async def remove(self, letters: Sequence[DeadLetter]) -> None:
        await self._source.ack(letters)


class RabbitDeadLetterQueues:
    """``DeadLetterQueues`` of the rabbit binder, on the binder's connections."""

    def __init__(
        self,
        connection: Callable[[], Awaitable[AbstractRobustConnection]],
        publisher: Callable[[], Awaitable[Publisher]],
    ) -> None:
        self._connection = connection
        self._publisher = publisher

    def dlq_of(self, spec: ConsumerSpec) -> str | None:
        key = f"bindings.{spec.binding_name}.consumer"
        settings = validate(RabbitConsumerSettings, spec.properties.extension, key)
        if not spec.group or not (spec.properties.dlq or settings.auto_bind_dlq):
            return None
        return naming.dlq(naming.group_queue(spec.destination, spec.group))

    @contextlib.asynccontextmanager
    async def _channel(self, dlq: str) -> AsyncIterator[DlqChannel]:
        channel = await DlqChannel.open(await self._connection(), dlq)
        try:
            yield channel
        finally:
            await channel.aclose()

    async def browse(self, dlq: str) -> AsyncGenerator[DeadLetter, None]:
        async with self._channel(dlq) as channel:
            async for letter in channel.letters():
                yield letter

    @contextlib.asynccontextmanager
    async def replay(self, dlq: str) -> AsyncIterator[RabbitReplaySession]:
        async with self._channel(dlq) as channel:
            publisher = await self._publisher()
            try:
                yield RabbitReplaySession(channel, publisher)
            finally:
                # Confirmations not awaited are the in-flight window: their messages stay.
                with contextlib.suppress(Exception):
                    await asyncio.shield(publisher.channel.close())

    async def purge(self, dlq: str) -> int:
        async with self._channel(dlq) as channel:
            return await channel.purge()

    async def aclose(self) -> None:
        return None
