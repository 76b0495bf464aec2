"""The rabbit binder: Spring Cloud Stream's RabbitMQ binder semantics on aio-pika.

Two robust connections, opened on first use: one for consumers, one for producers (a
publisher blocked by the broker's flow control does not stall consumers). Each consumed
queue and each producer gets its own channel; dead letters are republished on a channel of
the producer connection, always with publisher confirms. Connections and channels recover by
themselves after a broker restart, declaring their topology again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from typing import Any, Literal

from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection

from streamlib.binder import (
    BaseBinder,
    BinderContext,
    BindingError,
    ConsumerSpec,
    Dispatcher,
    ProducerSpec,
    TlsSettings,
    validate,
)

from . import addresses, timestamps
from .consumer import QueueConsumer, RabbitBinding
from .dead_letter_queues import RabbitDeadLetterQueues
from .errors import map_error
from .producer import Publisher, RabbitProducer
from .provisioning import RabbitProvisioner, consumer_queues
from .settings import RabbitBinderSettings, RabbitConsumerSettings, RabbitProducerSettings

log = logging.getLogger("streamlib.rabbit")

Role = Literal["consumer", "producer"]


def ssl_context(
    settings: RabbitBinderSettings, key: str = "binders.rabbit"
) -> ssl.SSLContext | None:
    """The TLS context of the connection, or None without TLS."""
    if not settings.uses_tls:
        return None
    return (settings.ssl or TlsSettings()).context(f"{key}.ssl")


class RabbitBinder(BaseBinder):
    """Binder ``type: rabbit``. Settings: see ``RabbitBinderSettings``."""

    messaging_system = "rabbitmq"

    def __init__(self, settings: Mapping[str, Any], context: BinderContext) -> None:
        timestamps.install()
        self._key = f"binders.{context.binder_name}"
        self.settings = validate(RabbitBinderSettings, dict(settings), self._key)
        self._context = context
        self._connections: dict[Role, AbstractRobustConnection] = {}
        self._connect_lock = asyncio.Lock()
        self._bindings: list[RabbitBinding] = []
        self._dead_letters: Publisher | None = None
        self._closed = False
        self._reconnects = 0

    def __repr__(self) -> str:
        return f"RabbitBinder({self.settings.safe_url()!r})"

    async def connection(self, role: Role) -> AbstractRobustConnection:
        """The robust connection for ``role``, opened on first use.

        Raises ConnectionLostError (or BrokerError for refused credentials) when the broker
        cannot be reached within ``connection-timeout``.
        """
        conn = self._connections.get(role)
        if conn is not None:
            return conn
        async with self._connect_lock:
            conn = self._connections.get(role)
            if conn is not None:
                return conn
            if self._closed:
                raise BindingError("the rabbit binder is closed")
            s = self.settings
            name = s.connection_name or f"{self._context.app_name}#{self._context.instance_index}"
            try:
                conn = await addresses.connect(
                    s.amqp_urls(),
                    timeout=s.connection_timeout,
                    ssl_context=ssl_context(s, self._key),
                    client_properties={"connection_name": f"{name}:{role}"},
                    heartbeat=s.heartbeat,
                    reconnect_interval=s.reconnect_interval,
                )
            except Exception as exc:
                raise map_error(exc, f"connect to {s.safe_url()}") from exc
            conn.reconnect_callbacks.add(self._reconnected)
            self._connections[role] = conn
            return conn

    async def _channel(self, role: Role, confirms: bool) -> AbstractRobustChannel:
        conn = await self.connection(role)
        try:
            # aio-pika refuses on_return_raises without confirms (returns need a confirm to fail).
            channel = await conn.channel(publisher_confirms=confirms, on_return_raises=confirms)
        except Exception as exc:
            raise map_error(exc, "open a channel") from exc
        assert isinstance(channel, AbstractRobustChannel)
        return channel

    async def _publisher(self, confirms: bool | None = None) -> Publisher:
        if confirms is None:
            confirms = self.settings.publisher_confirms
        channel = await self._channel("producer", confirms)
        s = self.settings
        return Publisher(channel, confirms, s.connection_timeout, s.max_in_flight)

    async def bind_consumer(self, spec: ConsumerSpec, dispatch: Dispatcher) -> RabbitBinding:
        """Declare the binding's queues (and DLQ) and, unless ``auto-startup`` is off,
        consume; returns once the broker confirmed every consumer."""
        key = f"bindings.{spec.binding_name}.consumer"
        settings = validate(RabbitConsumerSettings, spec.properties.extension, key)
        if spec.properties.partitioned and spec.group is None:
            raise BindingError(f"{key}: a partitioned consumer needs a group")
        dlq = spec.group is not None and (spec.properties.dlq or settings.auto_bind_dlq)
        if dlq and settings.republish_to_dlq and self._dead_letters is None:
            # Confirms on, whatever publisher-confirms says: the original is acked once its
            # dead letter is confirmed, or an unroutable or refused one would be lost.
            self._dead_letters = await self._publisher(confirms=True)
        conn = await self.connection("consumer")
        consumers = [
            QueueConsumer(conn, spec, plan, settings, dispatch, self._dead_letters if dlq else None)
            for plan in consumer_queues(spec, settings, dlq)
        ]
        opened: list[QueueConsumer] = []
        binding = RabbitBinding(spec, consumers)
        try:
            for consumer in consumers:
                await consumer.open()
                opened.append(consumer)
            if spec.properties.auto_startup:
                await binding.start()
        except BaseException:
            await asyncio.gather(*(c.close() for c in opened), return_exceptions=True)
            raise
        self._bindings.append(binding)
        return binding

    async def bind_producer(self, spec: ProducerSpec) -> RabbitProducer:
        """Declare the exchange (and the queues of ``required-groups``)."""
        key = f"bindings.{spec.binding_name}.producer"
        settings = validate(RabbitProducerSettings, spec.properties.extension, key)
        publisher = await self._publisher()
        try:
            await RabbitProvisioner(publisher.channel).provision_producer(spec, settings)
        except BaseException:
            await publisher.channel.close()
            raise
        return RabbitProducer(spec, settings, publisher)

    def dead_letters(self) -> RabbitDeadLetterQueues:
        """The DLQs of this binder's broker, for the ``streamlib dlq`` commands."""

        async def consumer_connection() -> AbstractRobustConnection:
            return await self.connection("consumer")

        return RabbitDeadLetterQueues(consumer_connection, lambda: self._publisher(confirms=True))

    def _reconnected(self, connection: Any) -> None:
        self._reconnects += 1

    def health(self) -> Mapping[str, Any]:
        """``status``, the broker (redacted), each connection's state, how many times a
        connection was re-established (``reconnects``), and whether each binding runs."""
        connections = {
            role: "up" if not conn.is_closed and conn.connected.is_set() else "reconnecting"
            for role, conn in self._connections.items()
        }
        status = "up" if all(state == "up" for state in connections.values()) else "down"
        return {
            "status": status,
            "broker": self.settings.safe_url(),
            "connections": connections,
            "reconnects": self._reconnects,
            "bindings": {b.name: b.is_running for b in self._bindings},
        }

    async def aclose(self) -> None:
        """Unbind every consumer, flush producers, close the connections."""
        self._closed = True
        for binding in self._bindings:
            await binding.unbind()
        self._bindings.clear()
        if self._dead_letters is not None:
            await self._dead_letters.aclose()
            self._dead_letters = None
        for conn in self._connections.values():
            try:
                await conn.close()
            except Exception as exc:
                log.debug("closing a connection failed: %s", map_error(exc, "close"))
        self._connections.clear()
