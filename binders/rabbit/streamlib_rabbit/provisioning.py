"""Declares what bindings need on the broker: exchanges, queues, bindings, DLX and DLQs.

Declarations go through an aio-pika robust channel, which declares them again after a
reconnection (a broker restart loses non-durable queues; anonymous queues are recreated
under the same name).
"""

from __future__ import annotations

from aio_pika import ExchangeType
from aio_pika.abc import AbstractRobustChannel, AbstractRobustQueue

from streamlib.binder import ConsumerSpec, ProducerSpec

from . import naming
from .errors import map_error
from .naming import QueuePlan
from .settings import QueueSettings, RabbitConsumerSettings, RabbitProducerSettings


def consumer_queues(
    spec: ConsumerSpec, settings: RabbitConsumerSettings, dlq_enabled: bool
) -> list[QueuePlan]:
    """The queues a consumer binding reads."""
    if spec.group is None:
        return [naming.anonymous_queue_plan(spec.destination, settings)]
    partitions = spec.partitions if spec.properties.partitioned else None
    return naming.group_queues(spec.destination, spec.group, partitions, settings, dlq_enabled)


def producer_queues(spec: ProducerSpec, settings: RabbitProducerSettings) -> list[QueuePlan]:
    """Queues of the producer's ``required-groups``, declared so no message is lost."""
    props = spec.properties
    count = props.partition_count
    partitions = tuple(range(count)) if props.partitioned else None
    plans: list[QueuePlan] = []
    for group in props.required_groups:
        plans.extend(
            naming.group_queues(
                spec.destination, group, partitions, settings, settings.auto_bind_dlq
            )
        )
    return plans


class RabbitProvisioner:
    """Declares topology on one robust channel."""

    def __init__(self, channel: AbstractRobustChannel) -> None:
        self._channel = channel

    async def exchange(self, destination: str, options: QueueSettings) -> None:
        if not options.declare_exchange:
            return
        name = naming.exchange(destination)
        try:
            await self._channel.declare_exchange(
                name, ExchangeType(options.exchange_type), durable=options.exchange_durable
            )
        except Exception as exc:
            raise map_error(exc, f"declare exchange {name!r}") from exc

    async def queue(self, destination: str, plan: QueuePlan) -> AbstractRobustQueue:
        """Declare ``plan``'s queue, bind it, and declare and bind its DLQ."""
        try:
            if plan.dlq is not None:
                dead = plan.dlq
                dlx = await self._channel.declare_exchange(
                    dead.exchange, ExchangeType.DIRECT, durable=True
                )
                dlq = await self._channel.declare_queue(
                    dead.queue, durable=True, arguments=dead.arguments or None
                )
                for key in dead.routing_keys:
                    await dlq.bind(dlx, key)
            queue = await self._channel.declare_queue(
                plan.name,
                durable=plan.durable,
                exclusive=plan.exclusive,
                auto_delete=plan.auto_delete,
                arguments=plan.arguments or None,
            )
            await queue.bind(naming.exchange(destination), plan.binding_key)
        except Exception as exc:
            raise map_error(exc, f"declare queue {plan.name!r}") from exc
        return queue

    async def provision_producer(
        self, spec: ProducerSpec, settings: RabbitProducerSettings
    ) -> None:
        await self.exchange(spec.destination, settings)
        for plan in producer_queues(spec, settings):
            await self.queue(spec.destination, plan)
