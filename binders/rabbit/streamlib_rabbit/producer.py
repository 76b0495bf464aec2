"""Publishing: pipelined publishes with publisher confirms, and the bound producer.

aio-pika's ``Exchange.publish`` (and aiormq's ``basic_publish``) return only once the broker
confirmed the message, so a sender waits a round trip per message. ``Publisher`` does what
``basic_publish`` does up to handing the frames to the connection's writer, registers the
confirmation future the same way, and returns it: many publishes are in flight at once and
each caller awaits its confirmation when it needs to. The publishes of one event-loop
iteration go to the socket in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Awaitable, Generator, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aiormq
from aio_pika.abc import AbstractRobustChannel
from aiormq.abc import ChannelFrame
from aiormq.channel import Returning
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.frame import marshal as marshal_frame
from pamqp.header import ContentHeader

from streamlib.binder import (
    CONTENT_TYPE,
    DONE,
    PARTITION,
    BrokerError,
    ConnectionLostError,
    Envelope,
    ProducerSpec,
    PublishError,
)

from . import naming
from .errors import map_error
from .limits import DEFAULT_FRAME_MAX
from .settings import RabbitProducerSettings

MAX_COALESCED = 256
"""Publishes joined into one write at most."""
PERSISTENT = 2
NON_PERSISTENT = 1


class Confirmation:
    """The broker's confirmation of one publish; awaiting it raises a streamlib error."""

    __slots__ = ("_exchange", "_future")

    def __init__(self, future: asyncio.Future[Any], exchange: str) -> None:
        self._future = future
        self._exchange = exchange

    def __await__(self) -> Generator[Any, None, None]:
        try:
            yield from self._future.__await__()
        except asyncio.CancelledError:
            if self._future.cancelled() and not _current_task_cancelling():
                raise ConnectionLostError(
                    f"publish to {self._exchange!r}: abandoned before it was confirmed"
                ) from None
            raise
        except Exception as exc:
            raise map_error(exc, f"publish to {self._exchange!r}") from exc

    def discard(self) -> None:
        """Nobody will await this: retrieve its outcome when it comes, so none is logged
        as never retrieved."""
        self._future.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class BulkConfirmation:
    """The confirmation of many publishes to one exchange: awaiting it waits for every one
    and raises once if any failed, naming the exchange and how many. Awaiting it again gives
    the same answer (the publishes' futures are done by then)."""

    __slots__ = ("_confirmations", "_exchange")

    def __init__(self, confirmations: list[Awaitable[None]], exchange: str) -> None:
        self._confirmations = confirmations
        self._exchange = exchange

    def __await__(self) -> Generator[Any, None, None]:
        failures: list[BrokerError] = []
        for confirmation in self._confirmations:
            try:
                yield from confirmation.__await__()
            except BrokerError as exc:
                failures.append(exc)
        if failures:
            raise self._error(failures)

    def _error(self, failures: list[BrokerError]) -> BrokerError:
        total = len(self._confirmations)
        refused = [f for f in failures if not isinstance(f, ConnectionLostError)]
        if not refused:
            # Only the connection failed: retriable as such, not the messages' fault.
            return ConnectionLostError(
                f"bulk publish to {self._exchange!r}: {len(failures)} of {total} messages "
                f"were not confirmed ({failures[0]})"
            )
        first = refused[0]
        error = PublishError(
            f"bulk publish to {self._exchange!r}: {len(failures)} of {total} messages were "
            f"not confirmed ({first})",
            retriable=all(f.retriable for f in refused),
        )
        error.__cause__ = first
        return error


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Publisher:
    """Publishes on one robust channel, confirms on, without waiting for each confirmation.

    The channel is used by this publisher only; a lock keeps delivery tags in the order the
    frames reach the writer, which is what the broker's confirms count.
    """

    def __init__(
        self,
        channel: AbstractRobustChannel,
        confirms: bool,
        timeout: float,
        max_in_flight: int = 10_000,
    ) -> None:
        self.channel = channel
        self._confirms = confirms
        self._timeout = timeout
        self._max_in_flight = max_in_flight
        self._raw: aiormq.Channel | None = None
        self._lock = asyncio.Lock()
        self._methods: dict[tuple[int, str, str, bool], bytes] = {}
        self._pending: list[bytes] = []
        self._pending_raw: aiormq.Channel | None = None
        self._flush_handle: asyncio.Handle | None = None

    async def underlay(self) -> aiormq.Channel:
        """The current aiormq channel, waiting for a reconnection (up to the timeout)."""
        raw = self._raw
        if raw is not None and not raw.is_closed:
            return raw
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    await self.channel.ready()
                    try:
                        found = await self.channel.get_underlay_channel()
                    except aiormq.exceptions.ChannelInvalidStateError:
                        found = None
                    if isinstance(found, aiormq.Channel) and not found.is_closed:
                        self._raw = found
                        return found
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise ConnectionLostError(
                f"no connection to the broker within {self._timeout:g}s"
            ) from None

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Basic.Properties,
        mandatory: bool = False,
    ) -> Awaitable[None]:
        """Hand one message to the connection; return its confirmation.

        Raises ConnectionLostError when no connection comes back within the timeout.
        """
        raw = self._raw
        if raw is None or raw.is_closed:
            raw = await self.underlay()
        if len(raw.confirmations) >= self._max_in_flight:
            await self._wait_for_room(raw)
        async with self._lock:
            if raw.is_closed:
                raw = await self.underlay()
            data = self._frames(raw, exchange, routing_key, mandatory, body, properties)
            if not self._confirms:
                await self._write(raw, data)
                return DONE
            raw.delivery_tag += 1
            tag = raw.delivery_tag
            future = raw.create_future()
            raw.confirmations[tag] = future
            message_id = properties.message_id
            if mandatory and message_id:
                # aiormq finds the confirmation of a returned message by its message id.
                raw.message_id_delivery_tag[message_id] = tag
                future.add_done_callback(partial(_forget, raw, message_id, tag))
            try:
                await self._write(raw, data)
            except BaseException:
                # The frames never reached the writer: give the tag back, as aiormq does.
                raw.delivery_tag -= 1
                raw.confirmations.pop(tag, None)
                raw.message_id_delivery_tag.pop(message_id or "", None)
                future.cancel()
                raise
        return Confirmation(future, exchange)

    async def _wait_for_room(self, raw: aiormq.Channel) -> None:
        """Backpressure: aiormq writes without waiting for the socket, so the number of
        unconfirmed publishes is what bounds the memory a fast sender can fill."""
        while len(raw.confirmations) >= self._max_in_flight and not raw.is_closed:
            oldest = next(
                (
                    f
                    for f in raw.confirmations.values()
                    if not f.done() and not isinstance(f, Returning)
                ),
                None,
            )
            if oldest is None:
                await asyncio.sleep(0)  # confirmed ones leave the dict in scheduled callbacks
            else:
                await asyncio.wait([oldest], timeout=self._timeout)

    def _frames(
        self,
        raw: aiormq.Channel,
        exchange: str,
        routing_key: str,
        mandatory: bool,
        body: bytes,
        properties: Basic.Properties,
    ) -> bytes:
        """The wire bytes of one publish: method, content header and body frames."""
        number = raw.number
        key = (number, exchange, routing_key, mandatory)
        method = self._methods.get(key)
        if method is None:
            if len(self._methods) > 1024:
                self._methods.clear()
            method = self._methods[key] = marshal_frame(
                Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory),
                number,
            )
        header = marshal_frame(ContentHeader(0, len(body), properties), number)
        frame_max = raw.connection.connection_tune.frame_max or DEFAULT_FRAME_MAX
        if len(header) > frame_max:
            # The broker would close the whole connection (FRAME_ERROR), failing every send.
            raise PublishError(
                f"publish to {exchange!r}: the message's properties and headers take "
                f"{len(header)} bytes, more than the connection's frame_max ({frame_max})"
            )
        parts = [method, header]
        size = raw.max_content_size
        for i in range(0, len(body), size):
            parts.append(marshal_frame(ContentBody(body[i : i + size]), number))
        return b"".join(parts)

    async def _write(self, raw: aiormq.Channel, data: bytes) -> None:
        """Queue ``data`` for the connection's writer, coalescing the publishes of one loop
        iteration into one write (one system call instead of one per message)."""
        if self._pending_raw is not raw:
            self._pending.clear()  # frames for a lost channel: their confirmations fail with it
            self._pending_raw = raw
        self._pending.append(data)
        if len(self._pending) >= MAX_COALESCED:
            await self._flush_now(raw)
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_handle = None
        raw = self._pending_raw
        if not self._pending or raw is None:
            return
        if raw.is_closed:
            self._pending.clear()
            return
        if raw.write_queue.full():
            self._flush_handle = asyncio.get_running_loop().call_later(0.001, self._flush_soon)
            return
        raw.write_queue.put_nowait(self._take_pending())

    async def _flush_now(self, raw: aiormq.Channel) -> None:
        frame = self._take_pending()
        queue = raw.write_queue
        if not queue.full():
            queue.put_nowait(frame)
            return
        # A full queue drains as the writer sends; a dead connection never drains it.
        try:
            async with asyncio.timeout(self._timeout):
                await queue.put(frame)
        except TimeoutError:
            raise ConnectionLostError(
                f"the connection did not take a message within {self._timeout:g}s"
            ) from None

    def _take_pending(self) -> ChannelFrame:
        payload = b"".join(self._pending)
        self._pending.clear()
        return ChannelFrame(payload=payload, should_close=False)

    async def flush(self) -> None:
        """Wait until every publish handed over so far was confirmed or failed."""
        raw = self._raw
        if raw is None or raw.is_closed:
            return
        pending = [f for f in raw.confirmations.values() if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=self._timeout)

    async def aclose(self) -> None:
        await self.flush()
        await self.channel.close()


def _forget(raw: aiormq.Channel, message_id: str, tag: int, _: object) -> None:
    if raw.message_id_delivery_tag.get(message_id) == tag:
        del raw.message_id_delivery_tag[message_id]


class MessageIds:
    """Unique message ids, cheaper than a uuid4 per message: a random prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:20] + "-"
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter)}"


class Clock:
    """AMQP timestamps (whole seconds), one datetime per second rather than per message."""

    def __init__(self) -> None:
        self._second = -1
        self._value = datetime.fromtimestamp(0, UTC)

    def now(self) -> datetime:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = datetime.fromtimestamp(second, UTC)
        return self._value


def amqp_headers(envelope: Envelope) -> tuple[str | None, dict[str, Any] | None]:
    """(content type, AMQP headers) of an envelope, as Spring sends them on RabbitMQ.

    The content type travels in the ``content_type`` property, never as a header; the
    partition is in the routing key, not in ``scst_partition``; a key goes in ``KEY_HEADER``.
    """
    headers = envelope.headers
    content_type = headers.get(CONTENT_TYPE)
    if isinstance(content_type, bytes):
        content_type = content_type.decode("utf-8", "replace")
    key = envelope.key
    if key is None and (not headers or (len(headers) == 1 and CONTENT_TYPE in headers)):
        return content_type, None
    out = {k: v for k, v in headers.items() if k != CONTENT_TYPE and k != PARTITION}
    if key is not None:
        if isinstance(key, bytes):
            with contextlib.suppress(UnicodeDecodeError):
                key = key.decode("utf-8")
        out[naming.KEY_HEADER] = key
    return content_type, out or None


class RabbitProducer:
    """A bound producer: publishes to the destination's exchange with its routing key."""

    def __init__(
        self, spec: ProducerSpec, settings: RabbitProducerSettings, publisher: Publisher
    ) -> None:
        self._publisher = publisher
        self._exchange = naming.exchange(spec.destination)
        self._destination = spec.destination
        self._routing_key = naming.routing_key(spec.destination, None)
        self._partition_keys: dict[int, str] = {}
        self._mandatory = settings.mandatory
        self._delivery_mode = (
            PERSISTENT if settings.delivery_mode == "persistent" else NON_PERSISTENT
        )
        self._ids = MessageIds()
        self._clock = Clock()

    async def send(self, envelope: Envelope) -> Awaitable[None]:
        partition = envelope.partition
        if partition is None:
            routing_key = self._routing_key
        else:
            routing_key = self._partition_keys.get(partition) or self._partition_key(partition)
        content_type, headers = amqp_headers(envelope)
        properties = Basic.Properties(
            content_type=content_type,
            headers=headers,
            delivery_mode=self._delivery_mode,
            priority=0,
            message_id=self._ids.next(),
            timestamp=self._clock.now(),
        )
        try:
            return await self._publisher.publish(
                self._exchange, routing_key, envelope.body, properties, self._mandatory
            )
        except Exception as exc:
            raise map_error(exc, f"publish to {self._exchange!r}") from exc

    async def send_many(self, envelopes: Sequence[Envelope]) -> Awaitable[None]:
        """Publish every envelope, in order, confirms pipelined (up to ``max-in-flight``
        unconfirmed); return the confirmation of all of them.

        Raises like ``send`` when one cannot be handed to the connection; what was handed
        over before goes on, unawaited."""
        confirmations: list[Awaitable[None]] = []
        try:
            for envelope in envelopes:
                confirmations.append(await self.send(envelope))
        except BaseException:
            for confirmation in confirmations:
                if isinstance(confirmation, Confirmation):
                    confirmation.discard()
            raise
        return BulkConfirmation(confirmations, self._exchange)

    def _partition_key(self, partition: int) -> str:
        key = self._partition_keys[partition] = naming.routing_key(self._destination, partition)
        return key

    async def aclose(self) -> None:
        await self._publisher.aclose()
