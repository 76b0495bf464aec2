"""Topic provisioning: create or grow the topics a binding needs, before it moves messages.

A topic gets ``max(min-partition-count, required)`` partitions, where a producer requires its
``partition-count`` and a consumer ``instance-count x concurrency``. An existing topic with
fewer partitions is grown when ``auto-add-partitions`` is on, else start-up fails naming the
topic and both counts. A DLQ topic gets its source topic's partition count. Each provisioned
topic's ``max.message.bytes`` and ``cleanup.policy`` are described and kept in the binder's
``RecordLimits``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.admin import (  # type: ignore[import-untyped]
    AIOKafkaAdminClient,
    NewPartitions,
    NewTopic,
)
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
    ConfigResource,
    ConfigResourceType,
)

from streamlib.binder import BindingError, ConsumerSpec, ProducerSpec

from . import naming
from .errors import describe, mapped, start_client
from .limits import RecordLimits
from .settings import KafkaBinderSettings

log = logging.getLogger("streamlib.kafka")

_TOPIC_ALREADY_EXISTS = 36


class KafkaProvisioner:
    """Creates topics with an admin client opened on first use."""

    def __init__(
        self,
        settings: KafkaBinderSettings,
        client_kwargs: dict[str, Any],
        key: str,
        limits: RecordLimits,
    ) -> None:
        self._settings = settings
        self._limits = limits
        self._client_kwargs = client_kwargs
        self._key = key
        self._admin: Any = None
        self._lock = asyncio.Lock()

    async def _client(self) -> Any:
        if self._admin is None:
            admin = AIOKafkaAdminClient(**self._client_kwargs)
            await start_client(admin, "connecting the admin client")
            self._admin = admin
        return self._admin

    async def partition_count(self, topic: str) -> int | None:
        """Partitions of ``topic``, or None when it does not exist."""
        admin = await self._client()
        with mapped(f"describing topic {topic!r}"):
            # Listing all topics does not auto-create; a metadata request naming one may.
            if topic not in await admin.list_topics():
                return None
            [described] = await admin.describe_topics([topic])
        return len(described["partitions"])

    async def ensure_topic(
        self, topic: str, required: int, why: str, tolerate_fewer: bool = False
    ) -> int:
        """Make ``topic`` exist with at least ``required`` partitions; returns its count.

        Raises BindingError when the topic is missing and auto-create-topics is off, or has
        fewer partitions and auto-add-partitions is off (unless ``tolerate_fewer``: a consumer
        under group management works with any count, as in Spring's binder).
        """
        async with self._lock:
            count = await self._ensure(topic, required, why, tolerate_fewer)
            await self._learn_limit(topic)
        return count

    async def _learn_limit(self, topic: str) -> None:
        """Describe the topic's ``max.message.bytes`` (its own or the broker default) and
        ``cleanup.policy``."""
        admin = await self._client()
        wanted = {"max.message.bytes": None, "cleanup.policy": None}
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, wanted)
        try:
            [response] = await admin.describe_configs([resource])
            [(code, message, _, _, entries)] = response.resources
            values = {entry[0]: entry[1] for entry in entries}
            if code:
                raise RuntimeError(f"error {code} {message}")
            limit = int(values["max.message.bytes"])
            compacted = "compact" in str(values.get("cleanup.policy", "")).split(",")
        except Exception as exc:
            # Without DescribeConfigs rights only max-request-size is checked before sending.
            log.warning("cannot describe max.message.bytes of topic %r: %s", topic, describe(exc))
            return
        self._limits.learn(topic, limit)
        if compacted:
            self._limits.compacted.add(topic)
        batch_size = self._settings.producer.batch_size
        if limit < batch_size:
            log.warning(
                "topic %r takes batches of at most %d bytes (max.message.bytes) but %s."
                "producer.batch-size is %d: records that fit alone may be refused together",
                topic,
                limit,
                self._key,
                batch_size,
            )

    async def _ensure(self, topic: str, required: int, why: str, tolerate_fewer: bool) -> int:
        settings = self._settings
        required = max(required, settings.min_partition_count)
        existing = await self.partition_count(topic)
        admin = await self._client()
        if existing is None:
            if not settings.auto_create_topics:
                raise BindingError(
                    f"topic {topic!r} does not exist and {self._key}.auto-create-topics "
                    "is false; create it or enable auto-create-topics"
                )
            if await self._create(admin, topic, required):
                return await self._wait_for(topic, required)
            # Created meanwhile by another instance or by broker auto-creation.
            existing = await self._wait_for(topic, 1)
        if existing >= required:
            return existing
        if not settings.auto_add_partitions and tolerate_fewer:
            log.warning(
                "topic %r has %d partition(s), fewer than %d (%s); some consumers will idle",
                topic,
                existing,
                required,
                why,
            )
            return existing
        if not settings.auto_add_partitions:
            raise BindingError(
                f"topic {topic!r} has {existing} partition(s) but {required} are required "
                f"({why}); set {self._key}.auto-add-partitions to true or add them"
            )
        with mapped(f"adding partitions to topic {topic!r}"):
            await admin.create_partitions({topic: NewPartitions(total_count=required)})
        return await self._wait_for(topic, required)

    async def _create(self, admin: Any, topic: str, partitions: int) -> bool:
        """Create ``topic``; False when it already existed."""
        new = NewTopic(name=topic, num_partitions=partitions, replication_factor=1)
        # -1 asks the broker for its default.replication.factor (CreateTopics takes it since
        # Kafka 2.4); aiokafka's NewTopic refuses it, so it is set after construction.
        new.replication_factor = self._settings.replication_factor
        with mapped(f"creating topic {topic!r}"):
            response = await admin.create_topics([new])
        for name, code, *rest in response.topic_errors:
            if code == _TOPIC_ALREADY_EXISTS:
                return False
            if code:
                message = rest[0] if rest else ""
                raise BindingError(f"cannot create topic {name!r}: error {code} {message}")
        return True

    async def _wait_for(self, topic: str, required: int) -> int:
        """The broker answers before every node has the new metadata; wait until it shows."""
        count = 0
        for _ in range(100):
            count = await self.partition_count(topic) or 0
            if count >= required:
                return count
            await asyncio.sleep(0.05)
        raise BindingError(f"topic {topic!r} still has {count} of {required} partitions")

    async def provision_producer(self, spec: ProducerSpec) -> int:
        count = spec.properties.partition_count
        return await self.ensure_topic(
            naming.topic(spec.destination),
            count,
            f"bindings.{spec.binding_name}.producer.partition-count is {count}",
        )

    async def provision_consumer(self, spec: ConsumerSpec, group_managed: bool = False) -> int:
        """Provision a consumer's topic; ``group_managed`` consumers tolerate fewer partitions."""
        concurrency = spec.properties.concurrency
        count = await self.ensure_topic(
            naming.topic(spec.destination),
            spec.instance_count * concurrency,
            f"instance-count {spec.instance_count} x concurrency {concurrency}",
            tolerate_fewer=group_managed,
        )
        if spec.properties.dlq and spec.group:
            await self.ensure_topic(
                naming.dlq_topic(spec.destination, spec.group), count, "the source topic's count"
            )
        return count

    async def aclose(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            await admin.close()
