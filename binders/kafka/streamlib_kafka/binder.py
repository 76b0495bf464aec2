"""The Kafka binder: binds consumers and producers of a streamlib app to Apache Kafka."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from streamlib.binder import (
    BaseBinder,
    BinderContext,
    ConfigError,
    ConsumerSpec,
    Dispatcher,
    ProducerSpec,
    validate,
)

from . import naming
from .consumer import KafkaBinding
from .dead_letter_queues import KafkaDeadLetterQueues
from .limits import RecordLimits
from .producer import KafkaProducer, ProducerClient
from .provisioning import KafkaProvisioner
from .settings import (
    KafkaBinderSettings,
    client_kwargs,
    consumer_extension,
    producer_extension,
    producer_kwargs,
)


class KafkaBinder(BaseBinder):
    """Binder ``type: kafka``: one shared producer, one consumer per consumer binding."""

    messaging_system = "kafka"

    def __init__(self, settings: Mapping[str, Any], context: BinderContext) -> None:
        self._key = f"binders.{context.binder_name}"
        self.settings = validate(KafkaBinderSettings, dict(settings), self._key)
        self.context = context
        self._client_kwargs = client_kwargs(self.settings, self._key)
        producer = self.settings.producer
        limits = RecordLimits(producer.max_request_size, producer.compression_type is not None)
        self.provisioner = KafkaProvisioner(self.settings, self._client_kwargs, self._key, limits)
        self._producer = ProducerClient(
            {**self._client_kwargs, **producer_kwargs(self.settings)}, limits
        )
        self._bindings: dict[str, KafkaBinding] = {}

    async def bind_consumer(self, spec: ConsumerSpec, dispatch: Dispatcher) -> KafkaBinding:
        """Provision the topic (and DLQ topic), then start consuming unless auto-startup is off.

        Returns once the consumer has its partitions and positions. Raises ConfigError for
        invalid settings and BindingError when the topic cannot be provisioned.
        """
        extension = consumer_extension(spec)
        key = f"bindings.{spec.binding_name}"
        if spec.properties.partitioned and not spec.group:
            raise ConfigError(f"{key}.group", "a partitioned consumer requires a group")
        if spec.properties.dlq and not spec.group:
            raise ConfigError(
                f"{key}.group",
                "consumer.dlq requires a group (the DLQ topic is error.<destination>.<group>)",
            )
        transactional = None
        if extension.transactional:
            if not spec.group:
                raise ConfigError(f"{key}.group", "a transactional consumer requires a group")
            transactional = self._transactional_factory(spec)
        group_managed = extension.auto_rebalance and not spec.properties.partitioned
        count = await self.provisioner.provision_consumer(spec, group_managed)
        binding = KafkaBinding(
            spec,
            dispatch,
            extension,
            self.settings.consumer,
            self._client_kwargs,
            self._producer,
            count,
            transactional,
        )
        self._bindings[spec.binding_name] = binding
        if spec.properties.auto_startup:
            await binding.start()
        return binding

    def _transactional_factory(self, spec: ConsumerSpec) -> Callable[[str], Any]:
        """Transactional producers of a binding, one per assigned partition, each created
        with its partition's id (``naming.transactional_id``): the member that owns a
        partition owns its id, so replicas never share one, and a new owner fences a
        zombie predecessor and aborts the transaction it left open."""
        kwargs = {**self._client_kwargs, **producer_kwargs(self.settings)}
        kwargs["enable_idempotence"] = True

        def new(transactional_id: str) -> Any:
            return AIOKafkaProducer(**kwargs, transactional_id=transactional_id)

        return new

    async def bind_producer(self, spec: ProducerSpec) -> KafkaProducer:
        """Provision the topic with the producer's partition count and bind a producer."""
        producer_extension(spec)
        await self.provisioner.provision_producer(spec)
        await self._producer.get()
        return KafkaProducer(self._producer, naming.topic(spec.destination))

    def dead_letters(self) -> KafkaDeadLetterQueues:
        """The DLQ topics of this binder's settings, for the ``streamlib dlq`` commands."""
        return KafkaDeadLetterQueues(self._client_kwargs, producer_kwargs(self.settings))

    def _reachable(self) -> bool:
        clients = [getattr(self._producer.started, "client", None)]
        clients += [getattr(b.client(), "_client", None) for b in self._bindings.values()]
        for client in clients:
            for conn in getattr(client, "_conns", {}).values():
                if conn.connected():
                    return True
        return False

    def health(self) -> Mapping[str, Any]:
        """``status``, ``broker`` reachability, and per binding its partitions and lag."""
        reachable = self._reachable()
        return {
            "status": "up" if reachable else "down",
            "broker": {
                "reachable": reachable,
                "bootstrap-servers": self.settings.bootstrap_servers,
            },
            "bindings": {name: b.health() for name, b in self._bindings.items()},
        }

    async def aclose(self) -> None:
        """Stop every consumer, flush and close the producer, close the admin client."""
        for binding in self._bindings.values():
            await binding.unbind()
        self._bindings.clear()
        await self._producer.aclose()
        await self.provisioner.aclose()
