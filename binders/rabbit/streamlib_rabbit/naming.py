"""Every name the rabbit binder puts on the broker, as Spring Cloud Stream's Rabbit binder does.

destination            topic exchange ``<destination>``, durable
group                  queue ``<destination>.<group>``, durable, bound with ``#``
anonymous              queue ``<destination>.anonymous.<22-char base64url uuid4>``,
                       non-durable, exclusive, auto-delete, bound with ``#``
partition n            queue ``<destination>.<group>-<n>``, bound with ``<destination>-<n>``
producer routing key   ``<destination>``, or ``<destination>-<n>`` when partitioned
dead letters           direct exchange ``DLX``; DLQ ``<queue>.dlq`` bound with ``<queue>``;
                       partitioned groups share ``<destination>.<group>.dlq``, bound
                       with ``<destination>.<group>`` and each ``<destination>.<group>-<n>``
message key            AMQP header ``streamlib-key`` (RabbitMQ has no key; only sent
                       when a message has one)
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

from .settings import QueueSettings

ANY = "#"
"""Binding key of a non-partitioned queue: every routing key."""
KEY_HEADER = "streamlib-key"
"""AMQP header that carries a message key, when there is one."""
DLQ_SUFFIX = ".dlq"


def exchange(destination: str) -> str:
    return destination


def group_queue(destination: str, group: str) -> str:
    return f"{destination}.{group}"


def partition_queue(destination: str, group: str, partition: int) -> str:
    return f"{destination}.{group}-{partition}"


def partition_routing_key(destination: str, partition: int) -> str:
    return f"{destination}-{partition}"


def anonymous_queue(destination: str) -> str:
    """``<destination>.anonymous.<id>``: Spring's base64url (no padding) of a random uuid4."""
    token = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
    return f"{destination}.anonymous.{token}"


def dlq(queue: str) -> str:
    return queue + DLQ_SUFFIX


@dataclass(frozen=True, slots=True)
class DlqPlan:
    """A dead-letter queue and the keys binding it to the dead-letter exchange."""

    exchange: str
    queue: str
    routing_keys: tuple[str, ...]
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueuePlan:
    """One queue to declare and bind to a destination's exchange."""

    name: str
    binding_key: str
    partition: int | None
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: dict[str, Any]
    dlq: DlqPlan | None


def queue_arguments(options: QueueSettings) -> dict[str, Any]:
    """``x-*`` arguments of a consumer queue from its options (dead-lettering excluded)."""
    args: dict[str, Any] = {}
    if options.quorum:
        args["x-queue-type"] = "quorum"
    if options.single_active_consumer:
        args["x-single-active-consumer"] = True
    if options.max_length is not None:
        args["x-max-length"] = options.max_length
    if options.max_length_bytes is not None:
        args["x-max-length-bytes"] = options.max_length_bytes
    if options.overflow is not None:
        args["x-overflow"] = options.overflow
    if options.ttl is not None:
        args["x-message-ttl"] = options.ttl
    if options.expires is not None:
        args["x-expires"] = options.expires
    if options.delivery_limit is not None:
        args["x-delivery-limit"] = options.delivery_limit
    if options.dead_letter_strategy is not None:
        args["x-dead-letter-strategy"] = options.dead_letter_strategy
        if options.dead_letter_strategy == "at-least-once" and options.overflow is None:
            # The broker keeps at-least-once dead-lettering only with reject-publish.
            args["x-overflow"] = "reject-publish"
    return args


def group_queues(
    destination: str,
    group: str,
    partitions: tuple[int, ...] | None,
    options: QueueSettings,
    dlq_enabled: bool,
) -> list[QueuePlan]:
    """Queues of a consumer group: one, or one per partition in ``partitions``.

    With dead-lettering on, each queue dead-letters to ``DLX`` with its own name as routing
    key, and the DLQ (shared by the partitions of a group) is bound with every such key.
    """
    targets: list[tuple[str, str, int | None]]
    if partitions is None:
        targets = [(group_queue(destination, group), ANY, None)]
        dlq_name = dlq(group_queue(destination, group))
    else:
        targets = [
            (partition_queue(destination, group, p), partition_routing_key(destination, p), p)
            for p in partitions
        ]
        dlq_name = dlq(group_queue(destination, group))
    plans = []
    for name, key, partition in targets:
        args = queue_arguments(options)
        dead: DlqPlan | None = None
        if dlq_enabled:
            args["x-dead-letter-exchange"] = options.dead_letter_exchange
            args["x-dead-letter-routing-key"] = name
            keys = (name,) if partition is None else (group_queue(destination, group), name)
            dead = DlqPlan(options.dead_letter_exchange, dlq_name, keys, dlq_arguments(options))
        plans.append(
            QueuePlan(
                name=name,
                binding_key=key,
                partition=partition,
                durable=options.durable_subscription,
                exclusive=False,
                auto_delete=False,
                arguments=args,
                dlq=dead,
            )
        )
    return plans


def dlq_arguments(options: QueueSettings) -> dict[str, Any]:
    """Arguments of a DLQ: with ``dlq-ttl``, dead letters expire back to their queue.

    Expired messages are dead-lettered through the default exchange with the routing key
    they were dead-lettered with, which is the name of their original queue.
    """
    args: dict[str, Any] = {}
    if options.quorum:
        args["x-queue-type"] = "quorum"
    if options.dlq_ttl is not None:
        args["x-message-ttl"] = options.dlq_ttl
        args["x-dead-letter-exchange"] = ""
    return args


def anonymous_queue_plan(destination: str, options: QueueSettings) -> QueuePlan:
    """An anonymous consumer's private queue (never quorum: those cannot be exclusive)."""
    args = queue_arguments(options)
    for quorum_only in (
        "x-queue-type",
        "x-single-active-consumer",
        "x-delivery-limit",
        "x-dead-letter-strategy",
    ):
        args.pop(quorum_only, None)
    return QueuePlan(
        name=anonymous_queue(destination),
        binding_key=ANY,
        partition=None,
        durable=False,
        exclusive=True,
        auto_delete=True,
        arguments=args,
        dlq=None,
    )


def routing_key(destination: str, partition: int | None) -> str:
    """Routing key a producer publishes with."""
    if partition is None:
        return destination
    return partition_routing_key(destination, partition)
