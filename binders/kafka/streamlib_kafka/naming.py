"""Wire names of the Kafka binder (Spring Cloud Stream's): topics, groups, DLQ topics."""

from __future__ import annotations

import uuid

ANONYMOUS_PREFIX = "anonymous."


def topic(destination: str) -> str:
    """The topic of a destination: the destination itself."""
    return destination


def group_id(group: str | None) -> str:
    """``group.id`` of a consumer: the group verbatim, or a fresh ``anonymous.<uuid4>``."""
    return group if group else f"{ANONYMOUS_PREFIX}{uuid.uuid4()}"


def dlq_topic(destination: str, group: str) -> str:
    """Dead-letter topic of a destination and group: ``error.<destination>.<group>``."""
    return f"error.{destination}.{group}"


def transactional_id(group: str, topic: str, partition: int) -> str:
    """``transactional.id`` of the producer that commits a partition's consumed offsets:
    ``streamlib-<group>.<topic>.<partition>`` (Spring Kafka's producer-per-partition
    scheme), so whoever owns the partition owns the id."""
    return f"streamlib-{group}.{topic}.{partition}"
